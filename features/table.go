package features

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/state"
)

// Options configure a Table. The zero value of each field has the meaning
// its comment gives.
type Options struct {
	// Redis is the proxy's own Redis, the store of specs that name none.
	// nil means there is none: such a spec is refused.
	Redis redis.UniversalClient
	// Dial returns a client for a spec's own store address. nil means
	// redis.NewClient with ContextTimeoutEnabled, so that every lookup is
	// bounded by its deadline.
	Dial func(addr string) redis.UniversalClient
	// Registerer receives the metrics. nil means none are registered.
	Registerer prometheus.Registerer
}

// Table holds the apps' lookups: the configuration file's, which a
// reload replaces with Set, and those set through the admin API, which
// the state carries in each app's Features and take the place of the
// file's. Its methods are safe for concurrent use.
type Table struct {
	opts    Options
	metrics *Metrics

	// changing guards clients and serializes the changes of lookups and
	// entries with sweep, so that a client dialed for a lookup is not
	// closed before the lookup is stored.
	changing sync.Mutex
	clients  map[string]redis.UniversalClient

	lookups sync.Map // app name → *Lookup, from the configuration file
	entries sync.Map // app name → *entry, what For answers
}

// entry is the lookup For answers for an app, kept while what it was made
// from is the same: the spec the state carries for the app (raw), or,
// with none, the configuration file's lookup (base); and the app's input
// type and layout, which the state, the admin API or a state kept from
// before may change under either.
type entry struct {
	raw    string
	base   *Lookup
	it     state.InputType
	inputs []state.InputPart
	lookup *Lookup
}

// current reports whether e was made for app as it is, with base the
// file's lookup for it.
func (e *entry) current(app state.App, base *Lookup) bool {
	return e.raw == string(app.Features) && e.base == base && e.it == app.InputType && slices.Equal(e.inputs, app.Inputs)
}

// NewTable returns an empty table.
func NewTable(opts Options) *Table {
	if opts.Dial == nil {
		opts.Dial = func(addr string) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		}
	}
	return &Table{opts: opts, metrics: newMetrics(opts.Registerer), clients: map[string]redis.UniversalClient{}}
}

// For returns app's lookup, or nil when it looks no features up: the
// spec the state carries for it (set through the admin API), else the
// configuration file's. A stored spec is parsed once per change of its
// text or of the app's input type or layout, and the file's is checked
// against the app as often (see fit). One that cannot serve here
// (invalid for the app's input, or naming no store on a proxy without
// Redis) gives a lookup whose every query is answered unavailable with
// the reason (or, under missing: default_output, gets the app's default
// output), rather than a query that ignores its entity.
func (t *Table) For(app state.App) *Lookup {
	if t == nil {
		return nil
	}
	var base *Lookup
	if app.Features == nil {
		v, ok := t.lookups.Load(app.Name)
		if !ok {
			if _, stale := t.entries.Load(app.Name); stale {
				t.forget(app.Name) // a stored spec cleared: its client may go
			}
			return nil
		}
		base = v.(*Lookup)
	}
	if v, ok := t.entries.Load(app.Name); ok && v.(*entry).current(app, base) {
		return v.(*entry).lookup
	}
	t.changing.Lock()
	defer t.changing.Unlock()
	if v, ok := t.entries.Load(app.Name); ok && v.(*entry).current(app, base) {
		return v.(*entry).lookup // made by a request that held changing first
	}
	e := &entry{raw: string(app.Features), base: base, it: app.InputType, inputs: slices.Clone(app.Inputs)}
	if base != nil {
		e.lookup = t.fit(app, base)
	} else {
		e.lookup = t.build(app)
	}
	t.entries.Store(app.Name, e)
	t.sweep()
	return e.lookup
}

// fit returns l, the configuration file's lookup for app, placed in app's
// input if its spec fits app as the state has it (its input type and
// layout); else a lookup whose every query is answered unavailable with
// the reason (or, under missing: default_output, gets the app's default
// output).
func (t *Table) fit(app state.App, l *Lookup) *Lookup {
	if err := l.spec.Validate(app); err != nil {
		return newBroken(app.Name, l.spec, fmt.Errorf("the configuration file's features spec does not fit the app's input: %w", err), t.metrics)
	}
	return l.placedIn(app) // a copy: l itself stays the file's
}

// Prune drops the entries of apps snap does not have, and closes the
// clients only they used: an app deleted with a spec set through the
// admin API otherwise keeps its store's client until the proxy stops.
func (t *Table) Prune(snap *state.Snapshot) {
	if t == nil {
		return
	}
	t.changing.Lock()
	defer t.changing.Unlock()
	gone := false
	t.entries.Range(func(k, _ any) bool {
		if _, ok := snap.App(k.(string)); !ok {
			t.entries.Delete(k)
			gone = true
		}
		return true
	})
	if gone {
		t.sweep()
	}
}

// forget drops app's entry, and the client only it used.
func (t *Table) forget(app string) {
	t.changing.Lock()
	defer t.changing.Unlock()
	if _, ok := t.entries.LoadAndDelete(app); ok {
		t.sweep()
	}
}

// build returns the lookup of app's stored spec.
func (t *Table) build(app state.App) *Lookup {
	var spec Spec
	err := spec.UnmarshalJSON(app.Features)
	if err == nil {
		err = spec.Validate(app)
	}
	if err != nil {
		return newBroken(app.Name, spec, fmt.Errorf("the app's features spec: %w", err), t.metrics)
	}
	client, err := t.client(spec.Redis)
	if err != nil {
		return newBroken(app.Name, spec, err, t.metrics)
	}
	return newLookup(app.Name, spec, client, t.metrics).placedIn(app)
}

// sweep closes the clients no lookup uses any more: the stores of specs
// that a reload or the admin API replaced. A request in flight on one
// finds it closed and follows its app's missing-entity policy. Called
// with changing held.
func (t *Table) sweep() {
	used := map[string]bool{}
	mark := func(_, v any) bool {
		var l *Lookup
		switch v := v.(type) {
		case *Lookup:
			l = v
		case *entry:
			l = v.lookup
		}
		used[l.spec.Redis] = true
		return true
	}
	t.lookups.Range(mark)
	t.entries.Range(mark)
	for addr, c := range t.clients {
		if !used[addr] {
			_ = c.Close()
			delete(t.clients, addr)
		}
	}
}

// CheckApp refuses, with an error wrapping state.ErrConflict that says
// what to change, an app whose features spec cannot fill its input (a
// float field in an int32 app, any field in a string or bytes app, an
// Input the app's layout lacks or sizes otherwise): the spec set through
// the admin API, or, when the app has none, the configuration file's. The
// state runs it on every change of an app (state.Options.CheckApp), in
// the same step as the write, so that no change of the app, nor of its
// features spec, leaves it with one that cannot serve. A stored spec that
// does not parse is left to For, which answers its queries unavailable.
func (t *Table) CheckApp(a state.App) error {
	if a.Features == nil {
		spec, ok := t.Configured(a.Name)
		if !ok {
			return nil
		}
		if err := spec.Validate(a); err != nil {
			return fmt.Errorf("%w: app %q: the configuration file's features spec does not fit its input (%v); change the file's, or set one that fits with PUT /api/v1/apps/%s/features",
				state.ErrConflict, a.Name, err, a.Name)
		}
		return nil
	}
	var spec Spec
	if spec.UnmarshalJSON(a.Features) != nil {
		return nil
	}
	if err := spec.Validate(a); err != nil {
		return fmt.Errorf("%w: app %q: the features spec set through the admin API does not fit its input (%v); change it with PUT /api/v1/apps/%s/features, or remove it with DELETE",
			state.ErrConflict, a.Name, err, a.Name)
	}
	return nil
}

// Check says whether spec can be served by this table: a spec that names
// no store of its own needs the proxy's Redis.
func (t *Table) Check(spec Spec) error {
	if spec.Redis == "" && t.opts.Redis == nil {
		return errNoStore
	}
	return nil
}

// Configured returns the configuration file's spec for app, if it has one.
func (t *Table) Configured(app string) (Spec, bool) {
	if l, ok := t.lookups.Load(app); ok {
		return l.(*Lookup).spec, true
	}
	return Spec{}, false
}

var errNoStore = errors.New("features: no redis address, and the proxy has no Redis")

// Set replaces every app's spec at once. Specs are validated by their
// owner (config) against the app; Set refuses one that names no store
// when the table has none, and changes nothing then.
func (t *Table) Set(specs map[string]Spec) error {
	t.changing.Lock()
	defer t.changing.Unlock()
	defer t.sweep()
	next := map[string]*Lookup{}
	for app, spec := range specs {
		client, err := t.client(spec.Redis)
		if err != nil {
			return fmt.Errorf("app %q: %w", app, err)
		}
		next[app] = newLookup(app, spec, client, t.metrics)
	}
	t.lookups.Range(func(k, _ any) bool {
		if _, ok := next[k.(string)]; !ok {
			t.lookups.Delete(k)
		}
		return true
	})
	for app, l := range next {
		t.lookups.Store(app, l)
	}
	t.entries.Range(func(k, v any) bool {
		if v.(*entry).base != nil {
			t.entries.Delete(k) // made from the file's old lookup: made again on use
		}
		return true
	})
	return nil
}

// client returns the store at addr, dialing it once. Called with
// changing held.
func (t *Table) client(addr string) (redis.UniversalClient, error) {
	if addr == "" {
		if t.opts.Redis == nil {
			return nil, errNoStore
		}
		return t.opts.Redis, nil
	}
	c, ok := t.clients[addr]
	if !ok {
		c = t.opts.Dial(addr)
		t.clients[addr] = c
	}
	return c, nil
}

// Close closes the clients the table dialed; not Options.Redis, which its
// owner closes.
func (t *Table) Close() error {
	t.changing.Lock()
	defer t.changing.Unlock()
	var first error
	for addr, c := range t.clients {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
		delete(t.clients, addr)
	}
	return first
}

// Metrics are the lookups' Prometheus metrics, by app.
type Metrics struct {
	latency  *prometheus.HistogramVec
	misses   *prometheus.CounterVec
	defaults *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

// appMetrics are one app's children of the Metrics, looked up once per
// lookup rather than per request.
type appMetrics struct {
	latency                  prometheus.Observer
	misses, defaults, errors prometheus.Counter
}

// forApp returns app's children of m; none for a nil m.
func (m *Metrics) forApp(app string) appMetrics {
	if m == nil {
		return appMetrics{}
	}
	return appMetrics{latency: m.latency.WithLabelValues(app), misses: m.misses.WithLabelValues(app),
		defaults: m.defaults.WithLabelValues(app), errors: m.errors.WithLabelValues(app)}
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_feature_lookup_duration_seconds",
			Help:    "Time of one request's feature lookup (its queries in one pipelined Redis round trip), by app.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}, []string{"app"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_feature_misses_total",
			Help: "Queries whose entity, or a field without a default, was missing from the feature store, by app.",
		}, []string{"app"}),
		defaults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_feature_defaults_total",
			Help: "Feature values that took their field's default, by app.",
		}, []string{"app"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_feature_store_errors_total",
			Help: "Feature lookups the store did not answer within the timeout (or failed), by app; their queries followed the missing-entity policy.",
		}, []string{"app"}),
	}
	if reg != nil {
		reg.MustRegister(m.latency, m.misses, m.defaults, m.errors)
	}
	return m
}
