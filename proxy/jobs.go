package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/state"
)

var _ jobs.Predictor = (*Proxy)(nil)

// CheckApp implements jobs.Predictor: a job's app must exist and link a
// model.
func (p *Proxy) CheckApp(app string) error {
	snap := p.opts.Store.Snapshot()
	if _, ok := snap.App(app); !ok {
		return fmt.Errorf("%w: no app named %q", state.ErrNotFound, app)
	}
	if len(snap.ModelsOf(app)) == 0 {
		return fmt.Errorf("%w: app %q links no model", state.ErrConflict, app)
	}
	return nil
}

// PredictJob implements jobs.Predictor: each input goes, encoded for the
// app's input type, to the current version of the app's first linked
// model (a job does not go through the app's selection policy, nor the
// cache), as a background query (dispatch.Background): after every
// online query, in batches that leave online queries their SLO.
func (p *Proxy) PredictJob(ctx context.Context, appName string, inputs []json.RawMessage) ([]jobs.Answer, error) {
	snap := p.opts.Store.Snapshot()
	app, ok := snap.App(appName)
	if !ok {
		return nil, fmt.Errorf("%w: no app named %q", state.ErrNotFound, appName)
	}
	t := p.targetOf(snap, app)
	if t.why != "" {
		return nil, errors.New(t.why)
	}
	answers := make([]jobs.Answer, len(inputs))
	ctx = dispatch.Background(ctx)
	var mu sync.Mutex // guards failed
	var failed error  // the first failure that is not an input's own
	var wg sync.WaitGroup
	for i, raw := range inputs {
		in, err := encodeInput(raw, app.InputType, "input")
		if err == nil {
			err = checkWidth(app, nil, [][]byte{in}, false) // a job's input is the model's whole input
		}
		if err != nil {
			answers[i].Err = err
			continue
		}
		wg.Go(func() {
			out, _, err := t.d.Predict(ctx, in)
			switch {
			case err == nil:
				answers[i].Output = appendOutput(nil, out)
			case errors.As(err, new(*dispatch.ModelError)), rpc.IsCode(err, rpc.FrameTooLarge):
				answers[i].Err = err
			default:
				mu.Lock()
				if failed == nil {
					failed = fmt.Errorf("model %s: %w", t.model, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return nil, failed
	}
	return answers, nil
}
