package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/state"
)

// errorf wraps kind with a message naming the problem.
func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// predictRequest is the query API's body: exactly one of the two fields.
type predictRequest struct {
	Input      json.RawMessage   `json:"input"`
	InputBatch []json.RawMessage `json:"input_batch"`
}

// answer is the outcome of one query.
type answer struct {
	id          string
	output      []byte // the model's output, or the default output
	isDefault   bool
	explanation string // why the default output was given
	model       string // model:version that answered or was asked; may be empty
	err         error  // a failure that is not answered by the default output
}

// readBody reads a body of at most the configured limit.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, p.opts.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, errorf(ErrBadInput, "reading the body: %v", err)
	}
	return body, nil
}

func (p *Proxy) servePredict(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p.metrics.inflight.Inc()
	defer p.metrics.inflight.Dec()
	appName := mux.Vars(r)["app"]
	snap := p.opts.Store.Snapshot()
	app, ok := snap.App(appName)
	if !ok {
		// Labelled with no app: names from the URL would let any client
		// create metric series.
		p.reject(w, "", errorf(ErrNotFound, "no app named %q", appName))
		return
	}
	body, err := p.readBody(w, r)
	if err != nil {
		p.reject(w, appName, err)
		return
	}
	var req predictRequest
	if err := json.Unmarshal(body, &req); err != nil {
		p.reject(w, appName, errorf(ErrBadInput, "body is not the JSON object {\"input\": ...} or {\"input_batch\": [...]}: %v", err))
		return
	}
	inputs, err := p.inputs(&req, app)
	if err != nil {
		p.reject(w, appName, err)
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), start.Add(app.SLO))
	defer cancel()

	answers := make([]answer, len(inputs))
	if len(inputs) == 1 {
		answers[0] = p.answer(ctx, snap, app, inputs[0])
	} else {
		var wg sync.WaitGroup
		for i := range inputs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = p.answer(ctx, snap, app, inputs[i])
			}()
		}
		wg.Wait()
	}
	latency := time.Since(start)
	p.metrics.latency.WithLabelValues("rest", app.Name).Observe(latency.Seconds())
	for i := range answers {
		p.record("rest", app.Name, &answers[i])
	}
	if r.Context().Err() != nil {
		return // the client is gone
	}
	if req.InputBatch == nil {
		if a := &answers[0]; a.err != nil {
			writeQueryError(w, a.id, a.err)
			return
		}
		writeJSON(w, appendAnswer(make([]byte, 0, 256), &answers[0], latency))
		return
	}
	b := append(make([]byte, 0, 128*len(answers)), `{"batch_predictions":[`...)
	for i := range answers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAnswer(b, &answers[i], latency)
	}
	writeJSON(w, append(b, "]}"...))
}

// inputs encodes the request's input or inputs for app.
func (p *Proxy) inputs(req *predictRequest, app state.App) ([][]byte, error) {
	switch {
	case req.Input != nil && req.InputBatch != nil:
		return nil, errorf(ErrBadInput, "body has both \"input\" and \"input_batch\"; send one")
	case req.Input != nil:
		in, err := encodeInput(req.Input, app.InputType, "input")
		if err != nil {
			return nil, err
		}
		return [][]byte{in}, nil
	case req.InputBatch == nil:
		return nil, errorf(ErrBadInput, "body has neither \"input\" nor \"input_batch\"")
	case len(req.InputBatch) == 0:
		return nil, errorf(ErrBadInput, "\"input_batch\" is empty")
	case len(req.InputBatch) > p.opts.MaxInputBatch:
		return nil, errorf(ErrBadInput, "\"input_batch\" has %d inputs; the limit is %d", len(req.InputBatch), p.opts.MaxInputBatch)
	}
	ins := make([][]byte, len(req.InputBatch))
	for i, raw := range req.InputBatch {
		in, err := encodeInput(raw, app.InputType, "input_batch["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		ins[i] = in
	}
	return ins, nil
}

// answer serves one input of app before ctx's deadline.
func (p *Proxy) answer(ctx context.Context, snap *state.Snapshot, app state.App, input []byte) answer {
	a := answer{id: p.newQueryID()}
	models := snap.ModelsOf(app.Name)
	if len(models) == 0 {
		return p.fallback(a, app, "no model is linked to the app")
	}
	mv, ok := snap.Current(models[0])
	if !ok {
		return p.fallback(a, app, fmt.Sprintf("model %s has no current version", models[0]))
	}
	a.model = mv.Model + ":" + mv.Version
	d := p.pool.get(mv.Model, mv.Version)
	if d == nil {
		return p.fallback(a, app, fmt.Sprintf("model %s is not running on this proxy yet", a.model))
	}
	out, _, err := d.Predict(ctx, input)
	switch {
	case err == nil:
		a.output = out
	case errors.Is(err, dispatch.ErrDeadline):
		_, healthy := d.Replicas()
		return p.fallback(a, app, fmt.Sprintf("deadline: model %s did not answer within the app's SLO of %v (%d healthy replicas)", a.model, app.SLO, healthy))
	case errors.Is(err, dispatch.ErrStopped):
		return p.fallback(a, app, fmt.Sprintf("model %s is shutting down", a.model))
	default:
		a.err = err
	}
	return a
}

// fallback makes a the app's default output, with the reason.
func (p *Proxy) fallback(a answer, app state.App, why string) answer {
	a.output, a.isDefault, a.explanation = []byte(app.DefaultOutput), true, why
	return a
}

// record counts an answer and logs it if it failed.
func (p *Proxy) record(api, app string, a *answer) {
	outcome := outcomeOK
	switch {
	case errors.Is(a.err, context.Canceled):
		outcome = outcomeCanceled
	case a.err != nil:
		outcome = outcomeError
		p.log.Error("query failed", zap.String("query_id", a.id), zap.String("app", app), zap.String("model", a.model), zap.Error(a.err))
	case a.isDefault:
		outcome = outcomeDefault
		if ce := p.log.Check(zap.DebugLevel, "default output"); ce != nil {
			ce.Write(zap.String("query_id", a.id), zap.String("app", app), zap.String("reason", a.explanation))
		}
	}
	p.metrics.requests.WithLabelValues(api, app, a.model, outcome).Inc()
}

// reject answers a request that never became a query (bad input, unknown
// app); such problems are the caller's, so they are logged at debug.
func (p *Proxy) reject(w http.ResponseWriter, app string, err error) {
	status := writeError(w, err)
	if ce := p.log.Check(zap.DebugLevel, "request rejected"); ce != nil {
		ce.Write(zap.String("app", app), zap.Int("status", status), zap.Error(err))
	}
	p.metrics.requests.WithLabelValues("rest", app, "", outcomeError).Inc()
}

// appendAnswer appends one answer as the query API's JSON object.
func appendAnswer(b []byte, a *answer, latency time.Duration) []byte {
	b = append(b, `{"query_id":"`...)
	b = append(b, a.id...)
	if a.err != nil {
		b = append(b, `","error":`...)
		b = appendString(b, a.err.Error())
		return append(b, '}')
	}
	b = append(b, `","output":`...)
	b = appendOutput(b, a.output)
	if a.isDefault {
		b = append(b, `,"default":true,"default_explanation":`...)
		b = appendString(b, a.explanation)
	} else {
		b = append(b, `,"default":false`...)
	}
	b = append(b, `,"model":`...)
	b = appendString(b, a.model)
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendFloat(b, float64(latency.Microseconds())/1000, 'f', -1, 64)
	return append(b, '}')
}

func writeJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
