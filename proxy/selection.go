package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/answered"
	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// ensembleModel is the model of an answer combined from several models;
// the answer lists them.
const ensembleModel = "ensemble"

// targetOfArm finds the model version of an arm: a model (its current
// version) or model:version.
func (p *Proxy) targetOfArm(snap *state.Snapshot, arm string) target {
	model, version, pinned := strings.Cut(arm, ":")
	var mv state.ModelVersion
	var ok bool
	if pinned {
		mv, ok = snap.Version(model, version)
		if !ok {
			return target{arm: arm, model: arm, why: fmt.Sprintf("model %s has no version %s", model, version)}
		}
	} else if mv, ok = snap.Current(model); !ok {
		return target{arm: arm, model: arm, why: fmt.Sprintf("model %s has no current version", model)}
	}
	t := target{arm: arm, mv: mv, d: p.pool.get(mv.Model, mv.Version)}
	if t.d == nil {
		t.model = mv.Model + ":" + mv.Version
		t.why = fmt.Sprintf("model %s is not running on this proxy yet", t.model)
		return t
	}
	t.model = t.d.Name()
	return t
}

// answerSelected answers each input of app before deadline with the arms
// its policy chooses, concurrently.
func (p *Proxy) answerSelected(parent context.Context, deadline time.Time, snap *state.Snapshot, app state.App, pol slo.Policy,
	sel selection.Policy, spec selection.Spec, inputs [][]byte) []answer {
	answers := make([]answer, len(inputs))
	arms := snap.ModelsOf(app.Name)
	ctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	q := selectQuery{app: app, pol: pol, sel: sel, spec: spec, snap: snap, arms: arms}
	var wg sync.WaitGroup
	for i := range answers {
		answers[i].id = p.newQueryID()
		if len(inputs) == 1 {
			p.answerOne(ctx, &q, inputs[i], &answers[i])
			break
		}
		wg.Go(func() { p.answerOne(ctx, &q, inputs[i], &answers[i]) })
	}
	wg.Wait()
	return answers
}

// selectQuery is what every input of one request shares.
type selectQuery struct {
	app  state.App
	pol  slo.Policy
	sel  selection.Policy
	spec selection.Spec
	snap *state.Snapshot
	arms []string
}

// answerOne answers one input into a: asks the chosen arms and combines
// the answers that arrive by ctx's deadline.
func (p *Proxy) answerOne(ctx context.Context, q *selectQuery, input []byte, a *answer) {
	c := q.sel.Choose(ctx, q.arms)
	if len(c.Arms) == 0 {
		*a = p.fallback(*a, q.app, "no model is linked to the app")
		return
	}
	var shadowed chan []byte // the answer returned, for the shadow to compare with
	rec := &answered.Query{App: q.app.Name, Choice: c, Outs: make([][]byte, len(c.Arms))}
	if c.Shadow != "" {
		shadowed = make(chan []byte, 1)
		p.shadow(ctx, q, c.Shadow, a.id, input, rec, shadowed)
	}
	parts := make([]answer, len(c.Arms))
	var wg sync.WaitGroup
	for j, arm := range c.Arms {
		p.sel.Metrics().Chose(q.app.Name, arm)
		t := p.targetOfArm(q.snap, arm)
		parts[j].id, parts[j].model = a.id, t.model
		if t.why != "" {
			parts[j] = p.fallback(parts[j], q.app, t.why)
			continue
		}
		if len(c.Arms) == 1 {
			p.askArm(ctx, q, t, input, &parts[j])
			break
		}
		wg.Go(func() { p.askArm(ctx, q, t, input, &parts[j]) })
	}
	wg.Wait()
	p.observe(q.sel, c, parts)
	p.combine(q, c, parts, a)
	anyAnswered := false
	for j := range parts {
		if parts[j].err == nil && !parts[j].isDefault {
			rec.Outs[j], anyAnswered = parts[j].output, true
		}
	}
	if shadowed != nil {
		var out []byte                    // nil: nothing returned to compare with, nothing kept
		if a.err == nil && !a.isDefault { // only when some part answered
			out = a.output
		}
		shadowed <- out
	}
	if anyAnswered {
		p.memory.Put(a.id, input, rec)
	}
}

// askArm makes a t's answer to input as the app takes it: predict's
// answer, settled by the app's policy.
func (p *Proxy) askArm(ctx context.Context, q *selectQuery, t target, input []byte, a *answer) {
	p.predict(ctx, t, q.app, input, p.cacheKey(q.app, t, input), a)
	p.settle(ctx, t, q.app, q.pol, a)
}

// combine makes a the answer of c's arms from their parts: the one
// part, or an ensemble's (a choice with weights) combination.
func (p *Proxy) combine(q *selectQuery, c selection.Choice, parts []answer, a *answer) {
	if len(parts) == 1 && c.Weights == nil {
		id := a.id
		*a = parts[0]
		a.id = id
		return
	}
	var outs [][]byte
	var weights []float64
	var firstErr error
	var whys []string
	for j := range parts {
		switch {
		case parts[j].err != nil:
			if firstErr == nil {
				firstErr = parts[j].err
			}
			a.missing = append(a.missing, parts[j].model)
		case parts[j].isDefault:
			whys = append(whys, parts[j].explanation)
			a.missing = append(a.missing, parts[j].model)
		default:
			outs = append(outs, parts[j].output)
			a.models = append(a.models, parts[j].model)
			if c.Weights != nil {
				weights = append(weights, c.Weights[j])
			}
		}
	}
	p.sel.Metrics().Answered(q.app.Name, len(outs))
	a.model = ensembleModel
	switch {
	case len(outs) > 0:
		a.output = q.spec.Output.Combine(outs, weights)
	case firstErr != nil && len(whys) == 0:
		a.err = firstErr
	default:
		*a = p.fallback(*a, q.app, "no model of the ensemble answered: "+strings.Join(whys, "; "))
	}
}

// observe tells a policy that watches answers (a guarded canary) how each
// arm did: within the SLO when it answered (answers are never late: the
// deadline cuts them off), failed when it erred or failed rather than
// missed the deadline.
func (p *Proxy) observe(sel selection.Policy, c selection.Choice, parts []answer) {
	o, ok := sel.(selection.Observer)
	if !ok {
		return
	}
	now := time.Now()
	for j := range parts {
		within := parts[j].err == nil && !parts[j].isDefault
		failed := parts[j].err != nil || (parts[j].isDefault && !parts[j].late && !parts[j].shed)
		o.Observe(c.Arms[j], now, within, failed)
	}
}

// shadow asks the shadow arm for input in the background, by ctx's
// deadline, and compares its answer with the one returned (sent on
// returned) and records it in rec for feedback; when none was returned,
// the query is not kept for feedback and the shadow's answer is dropped.
// The shadow's answer is never the app's: its failure, whatever it is,
// counts only as missing in the shadow's metric.
func (p *Proxy) shadow(ctx context.Context, q *selectQuery, arm, id string, input []byte, rec *answered.Query, returned <-chan []byte) {
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadlineOf(ctx))
	t := p.targetOfArm(q.snap, arm)
	p.background.Go(func() {
		defer cancel()
		var a answer
		if t.why == "" {
			p.sel.Metrics().Chose(q.app.Name, arm)
			p.predict(ctx, t, q.app, input, p.cacheKey(q.app, t, input), &a)
		}
		ret := <-returned
		switch {
		case t.why != "" || a.err != nil:
			p.sel.Metrics().Shadowed(q.app.Name, arm, "missing")
			return
		case ret == nil:
			return // no model answered the query, so it is not kept for feedback
		}
		p.sel.Metrics().Shadowed(q.app.Name, arm, fmt.Sprint(q.spec.Output.Agree(a.output, ret)))
		p.memory.Shadowed(id, rec, a.output)
	})
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// cacheKey is t's cache key for input, or nil when app does not cache.
func (p *Proxy) cacheKey(app state.App, t target, input []byte) *cache.Key {
	if p.opts.Cache == nil || app.NoCache {
		return nil
	}
	k := cache.NewKey(t.mv.Model, t.mv.Version, string(t.mv.InputType), input)
	return &k
}

// SelectionStatus returns what app's selection policy has learned, for
// the admin API.
func (p *Proxy) SelectionStatus(ctx context.Context, app string) (selection.Status, error) {
	snap := p.opts.Store.Snapshot()
	a, ok := snap.App(app)
	if !ok {
		return selection.Status{}, fmt.Errorf("%w: no app named %q", state.ErrNotFound, app)
	}
	return p.sel.Status(ctx, a.Name, a.Policy, a.Selection, snap.ModelsOf(a.Name)), nil
}
