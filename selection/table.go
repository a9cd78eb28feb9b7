package selection

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

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
	// ReadTimeout bounds a query's read of the shared state for its
	// choice, besides the query's own deadline: a stalled Redis costs a
	// choice at most this long, after which the policy chooses from its
	// last copy. Zero means DefaultReadTimeout.
	ReadTimeout time.Duration
}

// DefaultReadTimeout is Options.ReadTimeout's zero value: far above a
// healthy Redis's round trip on a busy host, far below an app's SLO.
const DefaultReadTimeout = 50 * time.Millisecond

// Table holds the apps' policies. An app's spec is the one set through the
// admin API, kept in the shared state with the app (stored, below); else
// the configuration's (Set, on each reload) when it is for the policy the
// app names; else the defaults of that policy. A policy is rebuilt only
// when its spec changes; what it learned is in the State, so it survives
// that and a restart. Safe for concurrent use.
type Table struct {
	st          State
	m           *Metrics
	log         *zap.Logger
	readTimeout time.Duration

	mu    sync.RWMutex // guards specs, gen and built
	specs map[string]Spec
	gen   uint64 // counts Set calls: a built policy of an older one is checked again
	built map[string]built
}

// built is an app's policy, the spec it runs and where that came from,
// and what the spec was derived from.
type built struct {
	from builtFrom
	spec Spec
	src  Source
	p    Policy
}

// builtFrom is what an app's spec is derived from: the configuration's
// generation, the policy the app names and its stored spec.
type builtFrom struct {
	gen            uint64
	policy, stored string
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
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	return &Table{st: opts.State, m: NewMetrics(opts.Registerer), log: opts.Logger, readTimeout: opts.ReadTimeout,
		specs: map[string]Spec{}, built: map[string]built{}}
}

// Metrics are the table's metrics, for the query path to report to.
func (t *Table) Metrics() *Metrics { return t.m }

// Set replaces the configuration's specs by app, which must be valid
// (Spec.Validate).
func (t *Table) Set(specs map[string]Spec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.specs = specs
	t.gen++
}

// Source says where an app's spec comes from.
type Source string

// Sources of a spec.
const (
	FromAdmin    Source = "admin"    // the admin API, kept in the shared state
	FromConfig   Source = "config"   // the configuration file
	FromDefaults Source = "defaults" // the policy's name alone
)

// specOf returns app's spec and where it comes from: its stored spec
// when it has one; else its configured spec when that is for the app's
// policy; else the policy name's defaults. It holds t.mu.
func (t *Table) specOf(app, policy string, stored []byte) (Spec, Source) {
	if len(stored) > 0 {
		s, err := ParseSpec(stored)
		if err != nil {
			t.log.Error("selection: the app's stored spec is invalid; it is served as single", zap.String("app", app), zap.Error(err))
			s = Spec{}
		}
		return s.withDefaults(), FromAdmin
	}
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

// get is Get with the spec's source. A query finds its app's policy with
// a read lock and three comparisons; the spec is derived again only when
// the configuration, the app's policy or its stored spec changed, and the
// policy rebuilt only when the spec did.
func (t *Table) get(app, policy string, stored []byte) (Policy, Spec, Source) {
	t.mu.RLock()
	b, ok := t.built[app]
	fresh := ok && b.from.gen == t.gen && b.from.policy == policy && b.from.stored == string(stored)
	t.mu.RUnlock()
	if fresh {
		return b.p, b.spec, b.src
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	from := builtFrom{gen: t.gen, policy: policy, stored: string(stored)}
	b, ok = t.built[app]
	if ok && b.from == from {
		return b.p, b.spec, b.src
	}
	spec, src := t.specOf(app, policy, stored)
	if !ok || !reflect.DeepEqual(b.spec, spec) {
		b.p = t.buildOrSingle(app, spec)
	}
	b.from, b.spec, b.src = from, spec, src
	t.built[app] = b
	return b.p, b.spec, b.src
}

// buildOrSingle builds app's policy from spec, or Single when spec is
// invalid.
func (t *Table) buildOrSingle(app string, spec Spec) Policy {
	p, err := t.build(app, spec)
	if err != nil {
		t.log.Error("selection: the app's policy is invalid; it is served as single", zap.String("app", app), zap.Error(err))
		return Single{}
	}
	return p
}

func (t *Table) build(app string, s Spec) (Policy, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	e := &env{app: app, st: t.st, m: t.m, log: t.log, readTimeout: t.readTimeout}
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
