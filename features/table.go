package features

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
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

// Table holds the apps' lookups; a configuration reload replaces them
// with Set. Its methods are safe for concurrent use.
type Table struct {
	opts    Options
	metrics *Metrics

	mu      sync.Mutex // guards clients
	clients map[string]redis.UniversalClient

	lookups sync.Map // app name → *Lookup
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

// Get returns the app's lookup, or nil when it declares no features.
func (t *Table) Get(app string) *Lookup {
	if t == nil {
		return nil
	}
	if l, ok := t.lookups.Load(app); ok {
		return l.(*Lookup)
	}
	return nil
}

// Set replaces every app's spec at once. Specs are validated by their
// owner (config) against the app; Set refuses one that names no store
// when the table has none, and changes nothing then.
func (t *Table) Set(specs map[string]Spec) error {
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
	return nil
}

// client returns the store at addr, dialing it once.
func (t *Table) client(addr string) (redis.UniversalClient, error) {
	if addr == "" {
		if t.opts.Redis == nil {
			return nil, fmt.Errorf("features: no redis address, and the proxy has no Redis")
		}
		return t.opts.Redis, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
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
	t.mu.Lock()
	defer t.mu.Unlock()
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

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_feature_lookup_duration_seconds",
			Help:    "Time of one request's feature lookup (its queries in one pipelined Redis round trip, shared with the requests waiting at the same time), from the request's view, by app.",
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
