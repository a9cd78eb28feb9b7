package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/answered"
	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// errorf wraps kind with a message naming the problem.
func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// answer is the outcome of one query.
type answer struct {
	id          string
	output      []byte // the model's output, or the default output
	isDefault   bool
	explanation string   // why the default output was given
	model       string   // model:version that answered or was asked; may be empty
	err         error    // a failure that is not answered by the default output
	shed        bool     // admission refused it: predicted to miss its deadline
	late        bool     // the default output because the deadline passed
	models      []string // an ensemble's models that answered
	missing     []string // an ensemble's models that did not
	cached      bool     // the output came from the cache, not from a model for this query
}

// servePredict serves the query API for the app named in the path.
func (p *Proxy) servePredict(w http.ResponseWriter, r *http.Request, appName string) {
	start := time.Now()
	p.metrics.inflight.Inc()
	defer p.metrics.inflight.Dec()
	snap := p.opts.Store.Snapshot()
	app, ok := snap.App(appName)
	if !ok {
		// Labelled with no app: names from the URL would let any client
		// create metric series.
		p.reject(w, "", errorf(ErrNotFound, "no app named %q", clip.String(appName)))
		return
	}
	buf := getBuffer()
	body, err := p.readBodyInto(*buf, w, r)
	if err != nil {
		putBuffer(buf, *buf)
		p.reject(w, appName, err)
		return
	}
	look := p.opts.Features.For(app) // one lookup for the entities and the answers
	batch, inputs, entities, err := p.decodePredict(body, app, look)
	putBuffer(buf, body)
	if err != nil {
		p.reject(w, appName, err)
		return
	}
	if bypassCache(r) {
		app.NoCache = true
	}
	pol := p.opts.Policies.Get(app.Name)
	limit, prio, err := budget(r, app, pol)
	if err != nil {
		p.reject(w, appName, err)
		return
	}
	// Admission learns each query's finish when its answer is written
	// (see dispatch.Delivery): the response path is part of its latency.
	var dl dispatch.Delivery
	defer func() { dl.Done(time.Now()) }()
	ctx := dispatch.WithDelivery(dispatch.WithReserve(withBudget(r.Context(), app, limit), slo.Reserve(limit, prio)), &dl)
	answers := p.answerApp(ctx, start.Add(limit), snap, app, pol, look, inputs, entities)
	now := time.Now()
	latency := now.Sub(start)
	p.metrics.latencyOf("rest", app.Name).Observe(latency.Seconds())
	for i := range answers {
		p.record("rest", app.Name, &answers[i])
		p.attain.record(app.Name, now, answers[i].err == nil && !answers[i].isDefault && latency <= limit)
	}
	setSource(w.Header(), answers)
	// A client that closed its side of the connection after its request
	// (a half-close, or gone altogether) cancels the queries still
	// waiting; the answers the proxy has are written all the same. If one
	// was abandoned, the request is answered with that error (499), which
	// a half-closed client still reads.
	for i := range answers {
		if a := &answers[i]; errors.Is(a.err, context.Canceled) {
			writeQueryError(w, a.id, a.err)
			return
		}
	}
	if !batch {
		if a := &answers[0]; a.err != nil {
			writeQueryError(w, a.id, a.err)
			return
		}
		out := getBuffer()
		b := appendAnswer(*out, &answers[0], latency)
		writeJSON(w, b)
		putBuffer(out, b)
		return
	}
	out := getBuffer()
	b := append(*out, `{"batch_predictions":[`...)
	for i := range answers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAnswer(b, &answers[i], latency)
	}
	b = append(b, "]}"...)
	writeJSON(w, b)
	putBuffer(out, b)
}

// decodePredict decodes a query API body for app into its inputs, encoded
// for the RPC, and, for an app with features (look, nil for none), each
// input's entity ids; batch says whether it held "input_batch".
func (p *Proxy) decodePredict(body []byte, app state.App, look *features.Lookup) (batch bool, inputs [][]byte, entities [][]string, err error) {
	if err := checkUTF8(body); err != nil {
		return false, nil, nil, err
	}
	e, err := decodeEnvelope(body)
	if err != nil {
		return false, nil, nil, err
	}
	inputs, err = p.inputs(e, app)
	if err == nil {
		err = checkWidth(app, look, inputs, e.batch != nil)
	}
	if err == nil {
		entities, err = entitiesOf(e, look, app, len(inputs))
	}
	return e.batch != nil, inputs, entities, err
}

// inputs encodes the envelope's input or inputs for app.
func (p *Proxy) inputs(e envelope, app state.App) ([][]byte, error) {
	switch {
	case e.input != nil && e.batch != nil:
		return nil, errorf(ErrBadInput, "body has both \"input\" and \"input_batch\"; send one")
	case e.input != nil:
		in, err := encodeInput(e.input, app.InputType, "input")
		if err != nil {
			return nil, err
		}
		return [][]byte{in}, nil
	case e.batch == nil:
		return nil, errorf(ErrBadInput, "body has neither \"input\" nor \"input_batch\"")
	}
	// One walk of the array: the walk stops at the first input past the
	// limit, so none past it is encoded.
	var ins [][]byte
	err := eachElement(e.batch, func(i int, raw []byte) error {
		if i == p.opts.MaxInputBatch {
			return errorf(ErrBadInput, "\"input_batch\" exceeds the limit of %d inputs", p.opts.MaxInputBatch)
		}
		in, err := encodeInputAt(raw, app.InputType, inputName{name: "input_batch", row: i, kind: nameElement})
		ins = append(ins, in)
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case len(ins) == 0:
		return nil, errorf(ErrBadInput, "\"input_batch\" is empty")
	}
	return ins, nil
}

// checkWidth checks the inputs of an app with an input layout (look is
// its feature lookup, nil for none): each carries the layout's parts in
// order, but the one the features fill, and so their total of values.
func checkWidth(app state.App, look *features.Lookup, inputs [][]byte, batch bool) error {
	if app.Inputs == nil {
		return nil
	}
	l := layoutOf(app, look)
	want, size := l.width(), app.InputType.ElemSize()
	for i, in := range inputs {
		if len(in) != want*size {
			what := "input"
			if batch {
				what = "input_batch[" + strconv.Itoa(i) + "]"
			}
			// The query API carries the entity ids apart, in "entity".
			return errorf(ErrBadInput, "%s has %d values; app %q takes %d: its inputs %s, one after the other", what, len(in)/size, app.Name, want, describeInputs(l.carried, nil))
		}
	}
	return nil
}

// target is the model version that answers an app's queries.
type target struct {
	arm   string // the model, or model:version, the policy chose
	mv    state.ModelVersion
	d     *dispatch.Dispatcher
	model string // "model:version", for answers, logs and metrics
	why   string // when there is none: why, for the default output
}

// targetOf finds the model version that answers the queries of an app
// whose policy is single: the first model linked.
func (p *Proxy) targetOf(snap *state.Snapshot, app state.App) target {
	models := snap.ModelsOf(app.Name)
	if len(models) == 0 {
		return target{why: "no model is linked to the app"}
	}
	return p.targetOfArm(snap, models[0])
}

// answerAll answers every input of app before deadline, by its selection
// policy; a single model's through answerTarget, each failure settled by
// the app (see settle). parent is the request's context.
func (p *Proxy) answerAll(parent context.Context, deadline time.Time, snap *state.Snapshot, app state.App, pol slo.Policy, inputs [][]byte) []answer {
	if sel, spec := p.sel.Get(app.Name, app.Policy, app.Selection); sel != (selection.Single{}) {
		return p.answerSelected(parent, deadline, snap, app, pol, sel, spec, inputs)
	}
	answers := make([]answer, len(inputs))
	defer p.remember(app, inputs, answers)
	t := p.targetOf(snap, app)
	for i := range answers {
		answers[i].id, answers[i].model = p.newQueryID(), t.model
		if t.why != "" {
			answers[i] = p.fallback(answers[i], app, t.why)
		}
	}
	if t.why == "" {
		p.answerTarget(parent, deadline, t, app, inputs, answers)
		for i := range answers {
			p.settle(parent, t, app, pol, &answers[i])
		}
	}
	return answers
}

// answerTarget answers inputs with t's model version into answers before
// deadline: from the prediction cache (L1, then the L1 misses in one Redis
// round trip) where app allows it, else from the model, concurrently. A
// failed answer holds the dispatcher's error as predict stores it. parent
// is the request's context.
func (p *Proxy) answerTarget(parent context.Context, deadline time.Time, t target, app state.App, inputs [][]byte, answers []answer) {
	var keys []cache.Key
	var outs [][]byte
	var hits []cache.Hit
	if c := p.opts.Cache; c != nil && !app.NoCache {
		keys = make([]cache.Key, len(inputs))
		for i, in := range inputs {
			keys[i] = cache.NewKey(t.mv.Model, t.mv.Version, string(t.mv.InputType), in)
		}
		outs = make([][]byte, len(inputs))
		hits = make([]cache.Hit, len(inputs))
		misses := c.Get(keys, outs, hits)
		for i := range answers {
			answers[i].output, answers[i].cached = outs[i], hits[i] != cache.Miss
		}
		if misses == 0 {
			return // all in L1: no deadline to keep, nothing that can block
		}
	}
	ctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	if keys != nil {
		p.opts.Cache.Fetch(ctx, keys, app.CacheTTL, outs, hits)
		for i, h := range hits {
			if h == cache.L2 {
				answers[i].output, answers[i].cached = outs[i], true
			}
		}
	}
	var wg sync.WaitGroup
	for i := range answers {
		if hits != nil && hits[i] != cache.Miss {
			continue
		}
		var key *cache.Key
		if keys != nil {
			key = &keys[i]
		}
		if len(inputs) == 1 {
			p.predict(ctx, t, app, inputs[i], key, &answers[i])
			break
		}
		t := t // the goroutines' own copy, so that a single input's t stays on the stack
		wg.Go(func() { p.predict(ctx, t, app, inputs[i], key, &answers[i]) })
	}
	wg.Wait()
}

// predict asks t's model for input's output, into a: the output, or in
// a.err the dispatcher's error as it came, for the caller to map (an app
// by settle, a model addressed through the OIP by oipError). With a key,
// identical concurrent misses share one inference and its output fills
// the cache.
func (p *Proxy) predict(ctx context.Context, t target, app state.App, input []byte, key *cache.Key, a *answer) {
	var out []byte
	var shared bool
	var err error
	if key != nil {
		out, shared, err = p.opts.Cache.Do(ctx, *key, app.CacheTTL, func(ctx context.Context) ([]byte, error) {
			out, _, err := t.d.Predict(ctx, input)
			return out, err
		})
	} else {
		out, _, err = t.d.Predict(ctx, input)
	}
	if err != nil {
		a.err = err
		return
	}
	a.output, a.cached = out, shared
}

// settle makes a's error from predict the app's answer: admission's
// refusal as the app's policy answers it, a deadline, a model shutting
// down or the replicas' failure as the default output with its reason, a
// caller gone as errClientGone; a model's refusal of the input, or an
// input too large for it, stays the error. ctx is the query's context, t
// the target predict asked. An answer without an error is left as it is.
func (p *Proxy) settle(ctx context.Context, t target, app state.App, pol slo.Policy, a *answer) {
	err := a.err
	if err == nil {
		return
	}
	a.err = nil
	switch {
	case isShed(err):
		p.shed(a, app, pol, err)
	case errors.Is(err, dispatch.ErrDoomed):
		*a = p.fallback(*a, app, "deadline: "+err.Error()+"; the budget was "+budgetOf(ctx, app))
		a.late = true
	case errors.Is(err, dispatch.ErrDeadline), errors.Is(err, context.DeadlineExceeded):
		_, healthy := t.d.Replicas()
		*a = p.fallback(*a, app, fmt.Sprintf("deadline: model %s did not answer within %s (%d healthy replicas)", t.model, budgetOf(ctx, app), healthy))
		a.late = true
	case errors.Is(err, dispatch.ErrStopped):
		*a = p.fallback(*a, app, fmt.Sprintf("model %s is shutting down", t.model))
	case errors.Is(err, context.Canceled):
		a.err = errClientGone(err)
	case errors.As(err, new(*dispatch.ModelError)), rpc.IsCode(err, rpc.FrameTooLarge):
		a.err = err // the model refused this input, or it is too large for the model
	default:
		// The replicas failed (connections lost, retries spent): the app
		// still gets an answer, flagged, with the reason; the operator a
		// line.
		p.log.Warn("model failed; answered the default output", zap.String("query_id", a.id),
			zap.String("app", app.Name), zap.String("model", t.model), zap.Error(err))
		*a = p.fallback(*a, app, fmt.Sprintf("model %s failed: %v", t.model, err))
	}
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
	case a.shed:
		outcome = outcomeShed
	case errors.Is(a.err, context.Canceled):
		outcome = outcomeCanceled
	case a.err != nil:
		outcome = outcomeError
		p.log.Error("query failed", zap.String("api", api), zap.String("query_id", a.id), zap.String("app", app), zap.String("model", a.model), zap.Error(a.err))
	case a.isDefault:
		outcome = outcomeDefault
		if ce := p.log.Check(zap.DebugLevel, "default output"); ce != nil {
			ce.Write(zap.String("query_id", a.id), zap.String("app", app), zap.String("reason", a.explanation))
		}
	}
	p.metrics.request(api, app, a.model, outcome).Inc()
}

// reject answers a request that never became a query (bad input, unknown
// app); such problems are the caller's, so they are logged at debug.
func (p *Proxy) reject(w http.ResponseWriter, app string, err error) {
	status := writeError(w, err)
	if ce := p.log.Check(zap.DebugLevel, "request rejected"); ce != nil {
		ce.Write(zap.String("app", app), zap.Int("status", status), zap.Error(err))
	}
	p.metrics.request("rest", app, "", outcomeError).Inc()
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
	if a.model == ensembleModel {
		b = appendStrings(append(b, `,"models":`...), a.models)
		b = appendStrings(append(b, `,"missing":`...), a.missing)
	}
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendFloat(b, float64(latency.Microseconds())/1000, 'f', -1, 64)
	return append(b, '}')
}

// appendStrings appends ss as a JSON array.
func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// remember keeps the answered queries of a single-model app for their
// feedback.
func (p *Proxy) remember(app state.App, inputs [][]byte, answers []answer) {
	for i := range answers {
		a := &answers[i]
		if a.err != nil || a.isDefault || a.model == "" {
			continue
		}
		arm, _, _ := strings.Cut(a.model, ":")
		p.memory.Put(a.id, inputs[i], &answered.Query{App: app.Name, Outs: [][]byte{a.output}, Choice: p.onlyChoice(arm)})
	}
}

// onlyChoice is the choice of arm alone, made once per arm: nothing
// changes a recorded choice, so every query of the arm shares it.
func (p *Proxy) onlyChoice(arm string) selection.Choice {
	if c, ok := p.choices.Load(arm); ok {
		return c.(selection.Choice)
	}
	c, _ := p.choices.LoadOrStore(arm, selection.Choice{Arms: []string{arm}, Probs: []float64{1}})
	return c.(selection.Choice)
}
