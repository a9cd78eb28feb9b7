package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// versionKey names a model version.
type versionKey struct{ model, version string }

// pooled is one model version's dispatcher and the settings it was made
// with; a change of settings replaces it.
type pooled struct {
	d         *dispatch.Dispatcher
	inputType state.InputType
	batchSize int
	batching  slo.Batching  // a change replaces the controllers and the governor, not the dispatcher
	gov       *slo.Governor // the version's admission and pacing
	profiled  time.Time     // when the profile the fits were seeded from was taken; zero: none
}

// pool keeps one dispatcher per model version in the state, with the
// replica addresses the state lists, and follows the state's changes.
type pool struct {
	opts         dispatch.Options // template for new dispatchers
	rpcKey       []byte           // derives swarm versions' secrets; see Options.RPCKey
	defaultBatch int
	policies     *slo.Table
	log          *zap.Logger
	kicks        chan struct{} // a policy changed: sync again

	mu sync.RWMutex // guards ds
	ds map[versionKey]*pooled

	closing sync.WaitGroup // dispatchers draining after removal
}

func newPool(opts dispatch.Options, rpcKey []byte, defaultBatch int, policies *slo.Table, log *zap.Logger) *pool {
	return &pool{opts: opts, rpcKey: rpcKey, defaultBatch: defaultBatch, policies: policies, log: log, kicks: make(chan struct{}, 1),
		ds: map[versionKey]*pooled{}}
}

// kick makes run sync again soon, without waiting for the state to change.
func (p *pool) kick() {
	select {
	case p.kicks <- struct{}{}:
	default: // a sync is already due
	}
}

// fit returns the latency fit admission predicts from for a model
// version, or nil.
func (p *pool) fit(model, version string) *slo.Fit {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if e := p.ds[versionKey{model, version}]; e != nil {
		return e.gov.Fit()
	}
	return nil
}

// get returns the dispatcher of a model version, or nil.
func (p *pool) get(model, version string) *dispatch.Dispatcher {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if e := p.ds[versionKey{model, version}]; e != nil {
		return e.d
	}
	return nil
}

// run follows the store until ctx is done, then closes every dispatcher
// after its queries in flight. changed runs after each sync, on run's
// goroutine.
func (p *pool) run(ctx context.Context, store *state.Store, changed func(*state.Snapshot)) {
	for {
		snap := store.Snapshot()
		p.sync(ctx, snap)
		changed(snap)
		select {
		case <-snap.Changed():
		case <-p.kicks:
		case <-ctx.Done():
			p.closeAll()
			return
		}
	}
}

// sync makes the dispatchers match snap.
func (p *pool) sync(ctx context.Context, snap *state.Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[versionKey]bool{}
	batching := p.policies.BatchingOf(snap)
	for _, m := range snap.Models() {
		for _, mv := range m.Versions {
			k := versionKey{mv.Model, mv.Version}
			seen[k] = true
			batch := slo.MaxBatch(mv, p.defaultBatch)
			e := p.ds[k]
			if e != nil && (e.inputType != mv.InputType || e.batchSize != batch) {
				p.retire(e)
				e = nil
			}
			b := batching[mv.Model]
			// A new profile, like new batching, starts the version's fits
			// afresh from it (seed.go in slo).
			prof, profiled := profileOf(snap, mv)
			if e != nil && (e.batching != b || !e.profiled.Equal(profiled)) {
				e.gov = b.NewSeededGovernor(prof)
				e.d.SetBatching(b.NewSeededController(prof), e.gov)
				e.batching, e.profiled = b, profiled
			}
			if e == nil {
				it, err := rpc.ParseInputType(string(mv.InputType))
				if err != nil {
					p.log.Error("model version has a bad input type", zap.String("model", mv.Model), zap.String("version", mv.Version), zap.Error(err))
					continue
				}
				opts := p.opts
				opts.Model, opts.Version, opts.InputType, opts.MaxBatch = mv.Model, mv.Version, it, batch
				gov := b.NewSeededGovernor(prof)
				opts.NewController, opts.Governor = b.NewSeededController(prof), gov
				if secret := runtime.Secret(p.rpcKey, mv.Runtime.Kind, mv.Model, mv.Version); secret != nil {
					// Off loopback: the replicas serve only who proves the version's secret.
					opts.Client.Secret = secret
				}
				e = &pooled{d: dispatch.New(opts), inputType: mv.InputType, batchSize: batch, batching: b, gov: gov, profiled: profiled}
				e.d.Start(ctx)
				p.ds[k] = e
			}
			e.d.SetReplicas(snap.Replicas(mv.Model, mv.Version))
		}
	}
	for k, e := range p.ds {
		if !seen[k] {
			delete(p.ds, k)
			p.retire(e)
		}
	}
}

// profileOf returns the stored profile of mv and when it was taken; nil
// and the zero time when it has none.
func profileOf(snap *state.Snapshot, mv state.ModelVersion) (*state.Profile, time.Time) {
	p, ok := snap.Profile(mv.Model, mv.Version)
	if !ok {
		return nil, time.Time{}
	}
	return &p, p.At
}

// retire closes a dispatcher in the background: its queries in flight are
// answered first.
func (p *pool) retire(e *pooled) {
	p.closing.Add(1)
	go func() {
		defer p.closing.Done()
		e.d.Close()
	}()
}

func (p *pool) closeAll() {
	p.mu.Lock()
	for k, e := range p.ds {
		delete(p.ds, k)
		p.retire(e)
	}
	p.mu.Unlock()
	p.closing.Wait()
}

var fitDesc = prometheus.NewDesc("sloproxy_latency_fit_seconds",
	"What admission and the latency_model controller have learned of a model version's batches: latency(n) = a + b*n, planned with a tail; term is a, b (seconds per query) or tail. 0 before the first batch.",
	[]string{"model", "version", "term"}, nil)

// Describe implements prometheus.Collector: the latency fit of every
// version with admission.
func (p *pool) Describe(ch chan<- *prometheus.Desc) { ch <- fitDesc }

// Collect implements prometheus.Collector.
func (p *pool) Collect(ch chan<- prometheus.Metric) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for k, e := range p.ds {
		f := e.gov.Fit()
		if f == nil {
			continue
		}
		a, b, tail := f.Params()
		for term, v := range map[string]time.Duration{"a": a, "b": b, "tail": tail} {
			ch <- prometheus.MustNewConstMetric(fitDesc, prometheus.GaugeValue, v.Seconds(), k.model, k.version, term)
		}
	}
}
