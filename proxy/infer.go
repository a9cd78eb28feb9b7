package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// InferRequest is an Open Inference Protocol inference request as a
// transport (the REST endpoint, the gRPC service) decoded it. Both go
// through Proxy.Infer: one query path for every front door.
type InferRequest struct {
	// Model names a model, or an app when no model has that name.
	Model string
	// Version names a model's version; "" means its current one. An app
	// takes none.
	Version string
	// ID is the client's request id, returned with the answer.
	ID string
	// Timeout is the caller's deadline budget; it shortens the SLO's, never
	// lengthens it. 0 means none.
	Timeout time.Duration
	// Priority is the OIP priority level: 0 the default, 1 the highest,
	// larger numbers lower (see oipClass).
	Priority uint32
	// Inputs are the request's input tensors.
	Inputs []InferInput
	// Outputs names the outputs asked for; empty means all.
	Outputs []string
}

// InferInput is one input tensor, its rows along dimension 0 decoded by
// the transport from its own datatype: numbers as the RPC's little-endian
// values of that datatype, BYTES as each element's bytes. Rows is nil for
// a datatype sloproxy takes nowhere.
type InferInput struct {
	Name     string
	Datatype string
	Shape    []int64
	Rows     [][]byte
}

// InferResult is the answer to an InferRequest.
type InferResult struct {
	// Model and Version are those of the model, or the app's name and
	// Served's version for an app.
	Model, Version string
	// Outputs holds each row's output bytes.
	Outputs [][]byte
	// Default flags the rows answered with the app's default output, and
	// Explanation gives the first one's reason. Only an app's rows can be
	// flagged: a model addressed by name answers an error instead.
	Default     []bool
	Explanation string
	// Served is the model:version that answered ("ensemble" for several).
	Served string
}

// DefaultRows lists the rows answered with the app's default output,
// comma-separated ("0,3"); "" when there are none.
func (r *InferResult) DefaultRows() string {
	var rows []byte
	for i, d := range r.Default {
		if d {
			if len(rows) > 0 {
				rows = append(rows, ',')
			}
			rows = strconv.AppendInt(rows, int64(i), 10)
		}
	}
	return string(rows)
}

// Infer answers an OIP inference request over api ("oip", "grpc"): a
// model's through its dispatcher, an app's as the query API answers it
// (features, selection, default output). Either way through the
// prediction cache, admission and batching, before the deadline: arrival
// plus the SLO of the app (for a model, the smallest of its apps', else
// Options.OIPTimeout), or the request's shorter Timeout.
func (p *Proxy) Infer(ctx context.Context, api string, req *InferRequest) (*InferResult, error) {
	start := time.Now()
	p.metrics.inflight.Inc()
	defer p.metrics.inflight.Dec()
	snap := p.opts.Store.Snapshot()
	if _, ok := snap.Model(req.Model); ok || req.Version != "" {
		return p.inferModel(ctx, api, start, snap, req)
	}
	if app, ok := snap.App(req.Model); ok {
		return p.inferApp(ctx, api, start, snap, app, req)
	}
	return nil, p.inferReject(api, "", errorf(ErrNotFound, "no model named %q (nor app)", clip.String(req.Model)))
}

// Reject counts and logs, as Infer does, a request over api that a
// transport refused before it became an InferRequest (one that did not
// decode), and returns err.
func (p *Proxy) Reject(api string, err error) error { return p.inferReject(api, "", err) }

// inferReject counts and logs, at debug as reject does, a request that
// never became a query.
func (p *Proxy) inferReject(api, app string, err error) error {
	if ce := p.log.Check(zap.DebugLevel, "request rejected"); ce != nil {
		ce.Write(zap.String("api", api), zap.String("app", app), zap.Error(err))
	}
	p.metrics.request(api, app, "", outcomeError).Inc()
	return err
}

// modelVersion resolves a model and version ("" is the current one).
func modelVersion(snap *state.Snapshot, model, version string) (state.Model, state.ModelVersion, error) {
	m, ok := snap.Model(model)
	if !ok {
		return m, state.ModelVersion{}, errorf(ErrNotFound, "no model named %q", clip.String(model))
	}
	if version == "" {
		version = m.CurrentVersion
	}
	mv, ok := m.Version(version)
	if !ok {
		return m, mv, errorf(ErrNotFound, "model %q has no version %q", m.Name, clip.String(version))
	}
	return m, mv, nil
}

// inferModel answers a request addressed to a model: no app's default
// output stands in, so every failure is an error, typed by oipError.
func (p *Proxy) inferModel(ctx context.Context, api string, start time.Time, snap *state.Snapshot, req *InferRequest) (*InferResult, error) {
	_, mv, err := modelVersion(snap, req.Model, req.Version)
	if err != nil {
		return nil, p.inferReject(api, "", err)
	}
	rows, _, err := p.inferRows(req, inferLayout{it: mv.InputType})
	if err != nil {
		return nil, p.inferReject(api, "", err)
	}
	d := p.pool.get(mv.Model, mv.Version)
	if d == nil {
		return nil, p.inferReject(api, "", errorf(ErrUnavailable, "model %s version %s is not running on this proxy yet", mv.Model, mv.Version))
	}
	// The model's answers are cached as its apps' are, unless one of them
	// keeps its answers out of the cache.
	app := state.App{InputType: mv.InputType, SLO: p.opts.OIPTimeout}
	if slo, noCache := linkedApps(snap, mv.Model); slo > 0 {
		app.SLO, app.NoCache = slo, noCache
	}
	timeout := app.SLO
	if req.Timeout > 0 {
		timeout = min(timeout, req.Timeout)
	}
	ctx = dispatch.WithReserve(ctx, slo.Reserve(timeout, oipClass(req.Priority)))
	t := target{mv: mv, d: d, model: d.Name()}
	answers := make([]answer, len(rows))
	p.answerTarget(ctx, start.Add(timeout), t, app, rows, answers)
	p.metrics.latencyOf(api, "").Observe(time.Since(start).Seconds())
	outs := make([][]byte, len(answers))
	for i := range answers {
		outs[i] = answers[i].output
		if isShed(answers[i].err) {
			// Admission's refusal is an error here (429, see oipError),
			// not a default output; counted as the reject policy's, with
			// no app.
			p.metrics.shedModel.Inc()
		}
	}
	a := answer{id: req.ID, model: t.model, err: oipError(answers, t.model, timeout)}
	a.shed = isShed(a.err)
	p.record(api, "", &a)
	if a.err != nil {
		return nil, a.err
	}
	return &InferResult{Model: mv.Model, Version: mv.Version, Outputs: outs, Served: t.model}, nil
}

// linkedApps returns the tightest SLO of the apps linking model, 0 when
// none does, and whether one of them keeps its answers out of the cache.
func linkedApps(snap *state.Snapshot, model string) (tightest time.Duration, noCache bool) {
	for _, name := range snap.AppsOf(model) {
		if a, ok := snap.App(name); ok {
			if tightest == 0 || a.SLO < tightest {
				tightest = a.SLO
			}
			noCache = noCache || a.NoCache
		}
	}
	return tightest, noCache
}

// inferApp answers a request addressed to an app, as its query API does.
func (p *Proxy) inferApp(ctx context.Context, api string, start time.Time, snap *state.Snapshot, app state.App, req *InferRequest) (*InferResult, error) {
	pol := p.opts.Policies.Get(app.Name)
	limit, prio := app.SLO, app.Priority
	if req.Timeout > 0 {
		limit = min(limit, req.Timeout)
	}
	if class := oipClass(req.Priority); class != 0 {
		if !pol.RequestPriority {
			return nil, p.inferReject(api, app.Name, errorf(ErrBadInput, "parameter \"priority\": app %q does not let requests set their priority (its policy's request_priority is off)", app.Name))
		}
		prio += class
	}
	look := p.opts.Features.For(app) // one lookup for the entity inputs and the answers
	rows, entities, err := p.inferRows(req, layoutOf(app, look))
	if err != nil {
		return nil, p.inferReject(api, app.Name, err)
	}
	ctx = dispatch.WithReserve(withBudget(ctx, app, limit), slo.Reserve(limit, prio))
	answers := p.answerApp(ctx, start.Add(limit), snap, app, pol, look, rows, entities)
	now := time.Now()
	latency := now.Sub(start)
	p.metrics.latencyOf(api, app.Name).Observe(latency.Seconds())
	res := &InferResult{Model: app.Name, Outputs: make([][]byte, len(answers)), Default: make([]bool, len(answers))}
	var failed error
	for i := range answers {
		a := &answers[i]
		p.record(api, app.Name, a)
		p.attain.record(app.Name, now, a.err == nil && !a.isDefault && latency <= limit)
		if a.err != nil && failed == nil {
			failed = fmt.Errorf("row %d: %w", i, a.err)
		}
		res.Outputs[i], res.Default[i] = a.output, a.isDefault
		if a.isDefault && res.Explanation == "" {
			res.Explanation = a.explanation
		}
		if res.Served == "" || res.Served == a.model {
			res.Served = a.model
		}
	}
	if failed != nil {
		return nil, failed
	}
	if i := strings.LastIndexByte(res.Served, ':'); i >= 0 {
		res.Version = res.Served[i+1:]
	}
	return res, nil
}

// inferLayout is what the tensors of a request to a model or app must
// be.
type inferLayout struct {
	it state.InputType
	// carried are the parts of the app's input layout that requests
	// carry, in the layout's order: all but the one its features fill.
	// nil means no layout: one input, of any name.
	carried []state.InputPart
	// filled is the name of the part the app's features fill, which the
	// request leaves out; "" when none.
	filled string
	// entity are the feature lookup's key fields: BYTES inputs of one
	// entity id per row.
	entity []string
}

// layoutOf is the layout of app's requests, whose feature lookup is look
// (nil for none).
func layoutOf(app state.App, look *features.Lookup) inferLayout {
	switch {
	case look == nil:
		return newLayout(app.InputType, app.Inputs, "", nil)
	case look.Carried() != nil: // worked out once per app by the lookup
		return inferLayout{it: app.InputType, carried: look.Carried(), filled: look.Input(), entity: look.KeyFields()}
	}
	return newLayout(app.InputType, app.Inputs, look.Input(), look.KeyFields())
}

// newLayout is the layout of requests of input type it and input layout
// parts (nil for none), whose features fill the part named filled ("" for
// none) and are looked up by the entity inputs.
func newLayout(it state.InputType, parts []state.InputPart, filled string, entity []string) inferLayout {
	l := inferLayout{it: it, carried: parts, entity: entity}
	if k := slices.IndexFunc(parts, func(p state.InputPart) bool { return p.Name == filled }); filled != "" && k >= 0 {
		l.carried = slices.Delete(slices.Clone(parts), k, k+1)
		l.filled = filled
	}
	return l
}

// inferRows checks the request's tensors against l and joins them into
// the model's rows: the inputs named in l.entity are columns of entity
// ids; the others are the parts of l.carried, each row of each of the
// part's size, joined in the layout's order. Without a layout,
// exactly one other input holds the rows, or none when entity ids are
// asked for (the features are then the whole input). It returns the rows
// and each row's entity ids.
func (p *Proxy) inferRows(req *InferRequest, l inferLayout) ([][]byte, [][]string, error) {
	for _, o := range req.Outputs {
		if o != "output" {
			return nil, nil, errorf(ErrBadInput, "unknown output %q: the model has one output, \"output\"", clip.String(o))
		}
	}
	slots := len(l.carried) // one for each carried part
	if l.carried == nil {
		slots = 1 // the one input
	}
	data := make([]*InferInput, slots)
	cols := make([][][]byte, len(l.entity))
	n := -1
	for i := range req.Inputs {
		in := &req.Inputs[i]
		name := clip.String(in.Name) // it appears only in errors
		if col := indexOf(l.entity, in.Name); col >= 0 {
			if in.Datatype != "BYTES" {
				return nil, nil, errorf(ErrBadInput, "input %q holds entity ids: its datatype must be BYTES, not %q", name, in.Datatype)
			}
			cols[col] = in.Rows
		} else if err := l.place(in, name, data, len(req.Inputs)); err != nil {
			return nil, nil, err
		}
		if n >= 0 && len(in.Rows) != n {
			return nil, nil, errorf(ErrBadInput, "input %q has %d rows, another %d; dimension 0 is the batch", name, len(in.Rows), n)
		}
		n = len(in.Rows)
	}
	for i, c := range cols {
		if c == nil {
			return nil, nil, errorf(ErrBadInput, "no input %q: the app looks its features up by it (a BYTES input, one id per row)", l.entity[i])
		}
	}
	for k, part := range l.carried {
		if data[k] == nil {
			return nil, nil, errorf(ErrBadInput, "no input %q: the app takes %s", part.Name, l.names())
		}
	}
	if n < 0 {
		return nil, nil, errorf(ErrBadInput, "the request has no inputs; the model takes one")
	}
	if n > p.opts.MaxInputBatch {
		return nil, nil, errorf(ErrBadInput, "the inputs have %d rows; the limit is %d", n, p.opts.MaxInputBatch)
	}
	rows := l.join(data, n)
	var ids [][]string
	if len(l.entity) > 0 {
		ids = make([][]string, n)
		for r := range ids {
			ids[r] = make([]string, len(l.entity))
			for c := range l.entity {
				ids[r][c] = string(cols[c][r])
			}
		}
	}
	return rows, ids, nil
}

// place checks a data input (one not of entity ids) of a request of
// inputs tensors, and puts it in its slot of data.
func (l inferLayout) place(in *InferInput, name string, data []*InferInput, inputs int) error {
	want := oipDatatype(l.it)
	if l.carried == nil {
		switch {
		case data[0] != nil || (len(l.entity) == 0 && inputs != 1):
			return errorf(ErrBadInput, "the request has %d inputs; the model takes one", inputs)
		case in.Datatype != want:
			return errorf(ErrBadInput, "input %q has datatype %q; the model takes %s", name, in.Datatype, want)
		}
		data[0] = in
		return nil
	}
	if l.filled != "" && in.Name == l.filled {
		return errorf(ErrBadInput, "input %q is the app's looked-up features; leave it out, and send %s", name, l.names())
	}
	k := slices.IndexFunc(l.carried, func(p state.InputPart) bool { return p.Name == in.Name })
	switch {
	case k < 0:
		return errorf(ErrBadInput, "unknown input %q: the app takes %s", name, l.names())
	case data[k] != nil:
		return errorf(ErrBadInput, "input %q appears twice", name)
	case in.Datatype != want:
		return errorf(ErrBadInput, "input %q has datatype %q; the model takes %s", name, in.Datatype, want)
	}
	width := l.carried[k].Size * l.it.ElemSize()
	for r, row := range in.Rows {
		if len(row) != width {
			return errorf(ErrBadInput, "input %q row %d has %d values; the part holds %d", name, r, len(row)/l.it.ElemSize(), l.carried[k].Size)
		}
	}
	data[k] = in
	return nil
}

// join returns the n rows of the model's input: each row's parts in the
// layout's order, or the one input's rows. It checks nothing: data must
// be as inferRows leaves it, every carried part there, with n rows each
// of its part's size.
func (l inferLayout) join(data []*InferInput, n int) [][]byte {
	var rows [][]byte
	switch {
	case l.carried == nil && data[0] != nil:
		rows = data[0].Rows
	case l.carried == nil:
		rows = make([][]byte, n) // the features are the whole input
	default:
		rows = make([][]byte, n)
		buf := make([]byte, 0, n*l.width()*l.it.ElemSize()) // one allocation for every row
		for r := range rows {
			start := len(buf)
			for _, in := range data {
				buf = append(buf, in.Rows[r]...)
			}
			rows[r] = buf[start:len(buf):len(buf)]
		}
	}
	for i := range rows {
		if rows[i] == nil {
			rows[i] = []byte{}
		}
	}
	return rows
}

// width is the number of values of each row a request carries by l: the
// sum of its carried parts' sizes; 0 without a layout.
func (l inferLayout) width() int {
	n := 0
	for _, p := range l.carried {
		n += p.Size
	}
	return n
}

// names lists the inputs a request carries by l: its carried parts, then
// its entity inputs.
func (l inferLayout) names() string { return describeInputs(l.carried, l.entity) }

// describeInputs lists parts, then entity inputs, for error messages.
func describeInputs(parts []state.InputPart, entity []string) string {
	var names []string
	for _, p := range parts {
		names = append(names, fmt.Sprintf("%q (size %d)", p.Name, p.Size))
	}
	for _, e := range entity {
		names = append(names, fmt.Sprintf("%q (entity ids)", e))
	}
	return strings.Join(names, ", ")
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// oipClass is the priority class of an OIP priority level, as Triton
// reads the level: 0 or absent is the default, 1 the highest, larger
// numbers lower. Level 1 (and the default) is class 0, and each level
// below is one class lower, shed first when queues grow (see
// slo.Reserve).
func oipClass(level uint32) int {
	if level <= 1 {
		return 0
	}
	return -int(min(level, math.MaxInt32) - 1)
}

// RetryAfter reports whether err is a query admission refused that its
// app answers with an error, and how long the caller should wait.
func RetryAfter(err error) (time.Duration, bool) {
	var shed *shedError
	if errors.As(err, &shed) {
		return shed.retryAfter, true
	}
	return 0, false
}
