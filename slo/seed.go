package slo

import (
	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/state"
)

// seedMedians is how many observations of its median each line of a
// profile gives a seeded Fit, beside one of its p99: the line is fitted
// to the medians, as the profile's own fit is, and the p99s are the
// residuals' tail.
const seedMedians = 3

// Seed replaces what f holds with the batches profile p measured, so
// that the first batches of a version that has not served yet are planned
// from measurements rather than from nothing. Live observations then
// replace them as any older ones (see Fit). A profile with no lines
// leaves f as it was.
func (f *Fit) Seed(p state.Profile) {
	if len(p.Lines) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reset()
	for _, l := range p.Lines {
		for range seedMedians {
			f.add(l.Batch, l.P50)
		}
		f.add(l.Batch, l.P99)
	}
}

// Seed seeds the controller's fit from profile p (Fit.Seed).
func (c *LatencyModel) Seed(p state.Profile) { c.fit.Seed(p) }

// seeder is a controller whose fit a profile can seed.
type seeder interface{ Seed(state.Profile) }

var _ seeder = (*LatencyModel)(nil)

// NewSeededController is NewController whose controllers, when they
// learn from a fit (latency_model), start from profile p; nil p, or
// another controller, is NewController's.
func (b Batching) NewSeededController(p *state.Profile) func() dispatch.Controller {
	newController := b.NewController()
	if p == nil {
		return newController
	}
	return func() dispatch.Controller {
		c := newController()
		if s, ok := c.(seeder); ok {
			s.Seed(*p)
		}
		return c
	}
}

// NewSeededGovernor is NewGovernor whose admission fit starts from
// profile p; nil p is NewGovernor's.
func (b Batching) NewSeededGovernor(p *state.Profile) *Governor {
	g := b.NewGovernor()
	if f := g.Fit(); f != nil && p != nil {
		f.Seed(*p)
	}
	return g
}
