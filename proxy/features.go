package proxy

import (
	"context"
	"strconv"
	"time"

	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// answerApp answers app's inputs before deadline. For an app with
// features, each input is first assembled with its entity's features,
// looked up for all the inputs in one round trip whose time comes out of
// the queries' budget, so that admission sees what is left; the cache key
// is then the assembled input's, so a changed feature is a new key. A
// query whose entity is missing follows the app's missing-entity policy.
func (p *Proxy) answerApp(ctx context.Context, deadline time.Time, snap *state.Snapshot, app state.App, pol slo.Policy, l *features.Lookup, inputs [][]byte, entities [][]string) []answer {
	if l == nil || entities == nil {
		return p.answerAll(ctx, deadline, snap, app, pol, inputs)
	}
	rows := l.Fetch(ctx, deadline, app.InputType, entities)
	answers := make([]answer, len(inputs))
	assembled := make([][]byte, 0, len(inputs))
	at := make([]int, 0, len(inputs))
	for i, r := range rows {
		if r.Outcome == features.Found || r.Outcome == features.Defaults {
			assembled = append(assembled, l.Assemble(inputs[i], r.Values))
			at = append(at, i)
			continue
		}
		a := answer{id: p.newQueryID()}
		switch r.Outcome {
		case features.EntityNotFound:
			a.err = errorf(ErrNotFound, "features: %s", r.Why)
		case features.StoreUnavailable:
			a.err = errorf(ErrUnavailable, "features: %s", r.Why)
		default:
			a = p.fallback(a, app, "features: "+r.Why)
		}
		answers[i] = a
	}
	if len(assembled) > 0 {
		for j, a := range p.answerAll(ctx, deadline, snap, app, pol, assembled) {
			answers[at[j]] = a
		}
	}
	return answers
}

// entitiesOf returns, for an app with features (l), each of the n
// inputs' values of the lookup's key fields, from the body's "entity" or
// "entity_batch"; nil for an app without (l nil).
func entitiesOf(e envelope, l *features.Lookup, app state.App, n int) ([][]string, error) {
	if l == nil {
		if e.entity != nil || e.entityBatch != nil {
			return nil, errorf(ErrBadInput, "app %q looks no features up: the body takes no \"entity\" or \"entity_batch\"", app.Name)
		}
		return nil, nil
	}
	objs := e.entityBatch
	what := "entity_batch"
	if e.batch == nil {
		objs, what = []map[string]string{e.entity}, "entity"
	}
	if e.batch != nil && len(objs) != n {
		return nil, errorf(ErrBadInput, "\"entity_batch\" has %d objects for %d inputs; send one per input", len(objs), n)
	}
	keys := l.KeyFields()
	ids := make([][]string, n)
	for i, obj := range objs {
		ids[i] = make([]string, len(keys))
		for k, key := range keys {
			v, ok := obj[key]
			if !ok {
				where := what
				if e.batch != nil {
					where += "[" + strconv.Itoa(i) + "]"
				}
				return nil, errorf(ErrBadInput, "%s has no %q: app %q looks its features up by it", where, key, app.Name)
			}
			ids[i][k] = v
		}
	}
	return ids, nil
}
