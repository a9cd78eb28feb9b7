package selection

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options configure a Table. The zero value of each field has the meaning
// its comment gives.
type Options struct {
	// State holds what the policies learn; nil means a new Memory.
	State State
	// Registerer receives the metrics; nil means a fresh registry.
	Registerer prometheus.Registerer
	// Logger receives rollbacks and state trouble; nil means none.
	Logger *zap.Logger
}

// Table holds the apps' policies. Specs come from the configuration (Set,
// on each reload); an app it has no spec for gets the policy its name
// alone describes, with the defaults. A policy is rebuilt only when its
// spec changes; what it learned is in the State, so it survives that and
// a restart. Safe for concurrent use.
type Table struct {
	st  State
	m   *Metrics
	log *zap.Logger

	mu    sync.RWMutex // guards specs and built
	specs map[string]Spec
	built map[string]built
}

type built struct {
	spec Spec
	p    Policy
}

// NewTable returns a table with no specs.
func NewTable(opts Options) *Table {
	if opts.State == nil {
		opts.State = NewMemory()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Table{st: opts.State, m: NewMetrics(opts.Registerer), log: opts.Logger, specs: map[string]Spec{}, built: map[string]built{}}
}

// Metrics are the table's metrics, for the query path to report to.
func (t *Table) Metrics() *Metrics { return t.m }

// Set replaces the specs by app, which must be valid (Spec.Validate).
func (t *Table) Set(specs map[string]Spec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.specs = specs
}

// specOf returns app's spec: the configured one, else the policy name's
// defaults. It holds t.mu.
func (t *Table) specOf(app, policy string) Spec {
	if s, ok := t.specs[app]; ok {
		return s.withDefaults()
	}
	return Spec{Policy: policy}.withDefaults()
}

// Get returns the policy of app, whose policy field is policy, and the
// spec it was built from.
func (t *Table) Get(app, policy string) (Policy, Spec) {
	t.mu.RLock()
	spec := t.specOf(app, policy)
	b, ok := t.built[app]
	t.mu.RUnlock()
	if ok && reflect.DeepEqual(b.spec, spec) {
		return b.p, spec
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	spec = t.specOf(app, policy)
	if b, ok := t.built[app]; ok && reflect.DeepEqual(b.spec, spec) {
		return b.p, spec
	}
	p, err := t.build(app, spec)
	if err != nil {
		t.log.Error("selection: the app's policy is invalid; it is served as single", zap.String("app", app), zap.Error(err))
		p = Single{}
	}
	t.built[app] = built{spec: spec, p: p}
	return p, spec
}

func (t *Table) build(app string, s Spec) (Policy, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	e := &env{app: app, st: t.st, m: t.m, log: t.log}
	var p Policy
	switch s.Policy {
	case NameSingle:
		p = Single{}
	case NameWeighted:
		p = newWeighted(e, s)
	case NameExp3:
		p = newExp3(e, s)
	case NameExp4:
		p = newExp4(e, s)
	default:
		return nil, fmt.Errorf("policy %q: unknown", s.Policy)
	}
	if s.Shadow != "" {
		p = Shadow{Policy: p, Arm: s.Shadow}
	}
	return p, nil
}

// Status returns what app's policy has learned, over arms (the models
// linked to the app).
func (t *Table) Status(ctx context.Context, app, policy string, arms []string) Status {
	p, _ := t.Get(app, policy)
	return statusOf(ctx, p, arms)
}
