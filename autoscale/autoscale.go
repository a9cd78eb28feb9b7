// Package autoscale sets each autoscaled model version's replica count
// from its demand and its replicas' capacity at the SLO, and turns the
// replica-seconds every version uses into its cost per 1,000 predictions.
//
// It reads, once a second, what the query path counted (arrivals, sheds,
// answers) and what the latency fit says one replica serves within the
// SLO, and writes the count it decides to the state with
// state.Store.ScaleVersion, the path the admin API's scaling takes; the
// runtimes reconcile as they do for any change of count. It decides
// nothing on the query path.
//
// It sees the demand that reaches this proxy: with several proxies behind
// one balancer, each sees its share, so run the autoscaler on one proxy
// only where that one sees all of the load. With Options.CountOnly
// (autoscaler.enabled off in the configuration) it decides nothing and
// only counts replica-seconds and cost.
package autoscale

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/state"
)

// DefaultInterval is how often the autoscaler decides and counts
// replica-seconds.
const DefaultInterval = time.Second

// DefaultCostWindow is the span sloproxy_cost_per_1k_predictions covers.
const DefaultCostWindow = 5 * time.Minute

// Observation is what the query path of this proxy saw of a model version.
type Observation struct {
	// Arrived, Shed and Answered count, since some start that does not
	// change, the queries that reached the version, those admission shed,
	// and those a replica answered (dispatch.Counts).
	Arrived, Shed, Answered uint64
	// Ready is how many replicas take work.
	Ready int
	// Capacity is the queries a second one replica serves within the SLO
	// of the version's apps, from the latency fit; 0 when unknown.
	Capacity float64
}

// Source tells what the query path saw of a model version; ok is false
// when this proxy has no dispatcher for it.
type Source interface {
	Observe(model, version string) (o Observation, ok bool)
}

// Store is the part of *state.Store the autoscaler uses.
type Store interface {
	Snapshot() *state.Snapshot
	ScaleVersion(ctx context.Context, model, version string, replicas int) error
}

var _ Store = (*state.Store)(nil)

// Options configure an Autoscaler. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Interval is the time between decisions. 0 means DefaultInterval.
	Interval time.Duration
	// CostWindow is the span of the cost per 1,000 predictions. 0 means
	// DefaultCostWindow.
	CostWindow time.Duration
	// MaxReplicas bounds every decision, as limits.max_replicas bounds
	// the admin API's. 0 means no bound beyond each version's max.
	MaxReplicas int
	// Pricing prices the replica-hours; the zero Pricing prices them at
	// 0. SetPricing replaces it.
	Pricing Pricing
	// CountOnly makes the autoscaler count replica-seconds and cost
	// without deciding any replica count: another proxy decides them.
	CountOnly bool
	// Logger receives one info line per decision, and the failures to
	// write one. nil means no logs.
	Logger *zap.Logger
	// Now is the clock. nil means time.Now.
	Now func() time.Time
}

// Autoscaler decides the replica counts of the autoscaled versions, unless
// Options.CountOnly, and counts every version's replica-seconds and cost.
// Start it, Close it.
type Autoscaler struct {
	store   Store
	source  Source
	opts    Options
	metrics *Metrics

	// mu guards pricing, versions and the lifecycle fields.
	mu       sync.Mutex
	pricing  Pricing
	versions map[key]*version
	cancel   context.CancelFunc
	done     chan struct{} // closed when the loop has returned; nil before Start
}

type key struct{ model, version string }

// version is what the autoscaler keeps of one model version between
// ticks.
type version struct {
	rule  Rule
	last  Observation // at the last tick
	at    time.Time   // of the last tick; zero before the first
	usage Usage
	ring  []sample  // cost and answers at each tick of the cost window, oldest first
	caps  []float64 // the capacities of the last capacityTicks ticks, oldest first; 0 unknown
}

// capacityTicks is how many ticks' capacities a decision takes the median
// of. The fit holds about a second of batches (slo.FitSpan); at a low load
// that is a few batches, and one slow spell of the processor moves it by
// a factor of ten for that second. The median of five seconds follows a
// change that lasts, and not one second's.
const capacityTicks = 5

// sample is a version's cumulative cost and answers at one tick.
type sample struct {
	at       time.Time
	cost     float64
	answered uint64
}

// New returns an autoscaler of store's versions that reads source and
// reports to m (nil: no metrics).
func New(store Store, source Source, m *Metrics, opts Options) *Autoscaler {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.CostWindow <= 0 {
		opts.CostWindow = DefaultCostWindow
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Autoscaler{store: store, source: source, opts: opts, metrics: m, pricing: opts.Pricing,
		versions: map[key]*version{}}
	m.watch(a)
	return a
}

// SetPricing replaces the prices from the next tick on (a configuration
// reload); the cost counted so far stays.
func (a *Autoscaler) SetPricing(p Pricing) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pricing = p
}

// Start decides every Interval, in the background, until ctx is done or
// Close is called.
func (a *Autoscaler) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done != nil {
		return errors.New("autoscale: already started")
	}
	ctx, a.cancel = context.WithCancel(ctx)
	a.done = make(chan struct{})
	go a.loop(ctx)
	return nil
}

// Close stops deciding and waits for a tick in progress to end.
func (a *Autoscaler) Close() error {
	a.mu.Lock()
	cancel, done := a.cancel, a.done
	a.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	return nil
}

func (a *Autoscaler) loop(ctx context.Context) {
	defer close(a.done)
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		a.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick counts the replica-seconds since the last tick and decides the
// count of every autoscaled version now; the loop calls it every
// Interval.
func (a *Autoscaler) Tick(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			a.opts.Logger.Error("autoscale: panic in a tick", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	now := a.opts.Now()
	snap := a.store.Snapshot()
	type write struct {
		mv  state.ModelVersion
		n   int
		why Reason
		in  Input
	}
	var writes []write
	a.mu.Lock()
	seen := map[key]bool{}
	for _, m := range snap.Models() {
		for _, mv := range m.Versions {
			k := key{mv.Model, mv.Version}
			seen[k] = true
			v := a.versions[k]
			if v == nil {
				v = &version{}
				a.versions[k] = v
			}
			o, ok := a.source.Observe(mv.Model, mv.Version)
			n, why, in := v.tick(now, mv, o, ok, a.pricing.Price(mv), a.opts)
			if why != "" {
				writes = append(writes, write{mv, n, why, in})
			}
		}
	}
	for k := range a.versions {
		if !seen[k] {
			delete(a.versions, k)
			a.metrics.forget(k)
		}
	}
	a.mu.Unlock()
	for _, w := range writes {
		a.write(ctx, w.mv, w.n, w.why, w.in)
	}
}

// write sets mv's count to n, and logs and counts the decision.
func (a *Autoscaler) write(ctx context.Context, mv state.ModelVersion, n int, why Reason, in Input) {
	log := a.opts.Logger.With(zap.String("model", mv.Model), zap.String("version", mv.Version))
	if err := a.store.ScaleVersion(ctx, mv.Model, mv.Version, n); err != nil {
		log.Warn("autoscale: writing the replica count failed; deciding again on the next tick", zap.Int("replicas", n), zap.Error(err))
		return
	}
	a.metrics.decided(key{mv.Model, mv.Version}, why)
	log.Info("autoscale: scaled", zap.String("reason", string(why)), zap.Int("from", mv.Replicas), zap.Int("to", n),
		zap.Int("ready", in.Ready), zap.Float64("demand_per_s", round(in.Demand)), zap.Float64("capacity_per_replica_per_s", round(in.Capacity)))
}

// tick counts mv's usage since the last tick and, for an autoscaled
// version this proxy observes, decides its count: n and why, why "" to
// leave it, and what the decision saw.
func (v *version) tick(now time.Time, mv state.ModelVersion, o Observation, observed bool, price float64, opts Options) (n int, why Reason, in Input) {
	if !v.at.IsZero() {
		dt := now.Sub(v.at).Seconds()
		rs := float64(mv.Replicas) * dt
		v.usage.ReplicaSeconds += rs
		v.usage.Cost += rs * price / 3600
	}
	if observed && o.Answered >= v.last.Answered {
		v.usage.Answered += o.Answered - v.last.Answered
	}
	v.ring = append(v.ring, sample{now, v.usage.Cost, v.usage.Answered})
	for len(v.ring) > 1 && now.Sub(v.ring[0].at) > opts.CostWindow {
		v.ring = v.ring[1:]
	}
	prev, prevAt := v.last, v.at
	v.last, v.at = o, now
	if opts.CountOnly || !observed || mv.Autoscale == nil || prevAt.IsZero() || o.Arrived < prev.Arrived {
		// Nothing to decide: counting only, a version not autoscaled or
		// not served here, or nothing to compare with yet (a first tick,
		// or a dispatcher made anew, its counts restarted).
		return mv.Replicas, "", Input{}
	}
	b := *mv.Autoscale
	if opts.MaxReplicas > 0 {
		b.Max = min(b.Max, opts.MaxReplicas)
		b.Min = min(b.Min, b.Max)
	}
	arrived := o.Arrived - prev.Arrived
	demand := float64(arrived) / now.Sub(prevAt).Seconds()
	shedShare := 0.0
	if arrived > 0 && o.Shed >= prev.Shed {
		shedShare = float64(o.Shed-prev.Shed) / float64(arrived)
	}
	in = Input{Now: now, Demand: demand, ShedShare: shedShare, Capacity: v.capacity(o.Capacity),
		Replicas: mv.Replicas, Ready: o.Ready, Bounds: b}
	n, why = v.rule.Decide(in)
	return n, why, in
}

// capacity records c (0: unknown) and returns the median of the known
// capacities of the last capacityTicks ticks, 0 with none.
func (v *version) capacity(c float64) float64 {
	v.caps = append(v.caps, c)
	if len(v.caps) > capacityTicks {
		v.caps = v.caps[1:]
	}
	known := slices.Sorted(func(yield func(float64) bool) {
		for _, c := range v.caps {
			if c > 0 && !yield(c) {
				return
			}
		}
	})
	if len(known) == 0 {
		return 0
	}
	return known[len(known)/2]
}

// Usage is what a model version used on this proxy since it first saw
// the version.
type Usage struct {
	// ReplicaSeconds is the desired replica count integrated over time.
	ReplicaSeconds float64
	// Cost is ReplicaSeconds at the version's price per replica-hour.
	Cost float64
	// Answered counts the queries its replicas answered.
	Answered uint64
}

// Usage returns what a model version used, and its cost per 1,000
// predictions over the cost window (NaN when it answered none in it); ok
// is false for a version the autoscaler has not seen.
func (a *Autoscaler) Usage(model, ver string) (u Usage, costPer1k float64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.versions[key{model, ver}]
	if v == nil {
		return Usage{}, math.NaN(), false
	}
	return v.usage, v.costPer1k(), true
}

// costPer1k is the cost per 1,000 answers over the ring; NaN with none.
func (v *version) costPer1k() float64 {
	if len(v.ring) < 2 {
		return math.NaN()
	}
	first, last := v.ring[0], v.ring[len(v.ring)-1]
	if last.answered == first.answered {
		return math.NaN()
	}
	return (last.cost - first.cost) / float64(last.answered-first.answered) * 1000
}

// round keeps two decimals, for logs.
func round(x float64) float64 { return math.Round(x*100) / 100 }
