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

// Table holds the apps' policies. An app's spec is the one set through the
// admin API, kept in the shared state with the app (stored, below); else
// the configuration's (Set, on each reload) when it is for the policy the
// app names; else the defaults of that policy. A policy is rebuilt only when its spec
// changes; what it learned is in the State, so it survives that and a
// restart. Safe for concurrent use.
type Table struct {
	st  State
	m   *Metrics
	log *zap.Logger

	mu    sync.RWMutex // guards specs and built
	specs map[string]Spec
	built map[string]built
}

type built struct {
	stored string // the stored spec it was built from; empty when none
	spec   Spec
	p      Policy
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

// Set replaces the configuration's specs by app, which must be valid
// (Spec.Validate).
func (t *Table) Set(specs map[string]Spec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.specs = specs
}

// Source says where an app's spec comes from.
type Source string

// Sources of a spec.
const (
	FromAdmin    Source = "admin"    // the admin API, kept in the shared state
	FromConfig   Source = "config"   // the configuration file
	FromDefaults Source = "defaults" // the policy's name alone
)

// specOf returns app's configured spec when it is for the app's policy,
// else the policy name's defaults, and which. It holds t.mu.
func (t *Table) specOf(app, policy string) (Spec, Source) {
	byName := Spec{Policy: policy}.withDefaults()
	if s, ok := t.specs[app]; ok {
		if s = s.withDefaults(); s.Policy == byName.Policy {
			return s, FromConfig
		}
	}
	return byName, FromDefaults
}

// Get returns the policy of app, whose policy field is policy and whose
// stored spec (the admin API's, in ParseSpec's form) is stored, and the
// spec it was built from.
func (t *Table) Get(app, policy string, stored []byte) (Policy, Spec) {
	p, spec, _ := t.get(app, policy, stored)
	return p, spec
}

func (t *Table) get(app, policy string, stored []byte) (Policy, Spec, Source) {
	if len(stored) > 0 {
		return t.getStored(app, stored)
	}
	t.mu.RLock()
	spec, src := t.specOf(app, policy)
	b, ok := t.built[app]
	t.mu.RUnlock()
	if ok && b.stored == "" && reflect.DeepEqual(b.spec, spec) {
		return b.p, spec, src
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	spec, src = t.specOf(app, policy)
	if b, ok := t.built[app]; ok && b.stored == "" && reflect.DeepEqual(b.spec, spec) {
		return b.p, spec, src
	}
	t.built[app] = t.buildOrSingle(app, spec, "")
	return t.built[app].p, spec, src
}

// getStored is get for an app with a stored spec: it is parsed once, when
// it changes.
func (t *Table) getStored(app string, stored []byte) (Policy, Spec, Source) {
	t.mu.RLock()
	b, ok := t.built[app]
	t.mu.RUnlock()
	if ok && b.stored == string(stored) {
		return b.p, b.spec, FromAdmin
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, ok := t.built[app]; ok && b.stored == string(stored) {
		return b.p, b.spec, FromAdmin
	}
	spec, err := ParseSpec(stored)
	if err != nil {
		t.log.Error("selection: the app's stored spec is invalid; it is served as single", zap.String("app", app), zap.Error(err))
	}
	b = t.buildOrSingle(app, spec.withDefaults(), string(stored))
	t.built[app] = b
	return b.p, b.spec, FromAdmin
}

// buildOrSingle builds app's policy from spec, or Single when spec is
// invalid.
func (t *Table) buildOrSingle(app string, spec Spec, stored string) built {
	p, err := t.build(app, spec)
	if err != nil {
		t.log.Error("selection: the app's policy is invalid; it is served as single", zap.String("app", app), zap.Error(err))
		p = Single{}
	}
	return built{stored: stored, spec: spec, p: p}
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
// linked to the app), with its spec and where that comes from.
func (t *Table) Status(ctx context.Context, app, policy string, stored []byte, arms []string) Status {
	p, spec, src := t.get(app, policy, stored)
	st := statusOf(ctx, p, arms)
	st.Spec, st.Source = spec, src
	return st
}
