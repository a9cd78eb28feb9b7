package autoscale

import (
	"math"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// Reason says why a decision changed a version's replica count.
type Reason string

// The reasons of a decision.
const (
	// Demand: the demand needs more replicas than the version has.
	Demand Reason = "demand"
	// Shed: admission shed queries while every replica was ready.
	Shed Reason = "shed"
	// Idle: fewer replicas have sufficed for the scale-down delay.
	Idle Reason = "idle"
	// Bounds: the count was outside the version's min and max.
	Bounds Reason = "bounds"
)

// Input is what one decision is made from.
type Input struct {
	// Now is when the decision is made.
	Now time.Time
	// Demand is the queries a second that reached the version, those
	// admission shed included.
	Demand float64
	// ShedShare is the share of the queries that arrived since the last
	// decision that admission shed.
	ShedShare float64
	// Capacity is the queries a second one replica serves within the SLO
	// (slo.Fit.Capacity); 0 when unknown, and then only sheds scale up.
	Capacity float64
	// Replicas is the version's desired count now, Ready how many of its
	// replicas take work.
	Replicas, Ready int
	// Bounds are the version's autoscale settings.
	Bounds state.Autoscale
}

// ShedBudget is the share of a second's queries admission may shed before
// the sheds alone scale a version up: the 1% of queries an objective of
// 99% within the SLO leaves. Fewer are the noise of a busy machine, which
// more replicas do not cure.
const ShedBudget = 0.01

// Rule is the decision rule of one model version. It remembers since when
// a lower count would have sufficed, and what counts were needed lately;
// the zero value remembers nothing.
type Rule struct {
	lowSince time.Time // when a lower count first sufficed; zero: it does not
	recent   []needed  // the counts needed since lowSince, at most the last half delay
}

type needed struct {
	at time.Time
	n  int
}

// Decide returns the replica count the version should have and why, or
// in.Replicas and "" to leave it.
//
// The count the demand needs is ceil(demand ÷ (capacity × target)). It
// scales up at once, to that count, or one above the ready replicas when
// admission shed more than ShedBudget while every replica was ready and
// the demand used at least half the target of their capacity (a replica still starting is no
// capacity yet, and the queries shed while it starts are no reason for
// another). It scales down only when lower counts have sufficed for the
// whole scale-down delay, and then to the largest count needed in the
// delay's second half: the first half holds the way down from the old
// load (a second that straddles the drop needs a count in between), the
// second half the load as it now is. So one drop of the load is one
// scale-down, and a count that was too low at any moment of the delay is
// never chosen. The result is always within the bounds.
func (r *Rule) Decide(in Input) (int, Reason) {
	b := in.Bounds
	if c := b.Clamp(in.Replicas); c != in.Replicas {
		r.reset()
		return c, Bounds
	}
	need := in.Replicas
	if in.Capacity > 0 {
		need = b.Clamp(max(1, int(math.Ceil(in.Demand/(in.Capacity*b.TargetOrDefault())))))
	}
	up, why := need, Demand
	// Sheds count where the replicas are busy (or how busy is unknown):
	// below half the target, a replica is mostly idle, and what sheds
	// is a busy processor's noise, which more replicas do not cure.
	busy := in.Capacity <= 0 || in.Ready == 0 || in.Demand >= float64(in.Ready)*in.Capacity*b.TargetOrDefault()/2
	shed := busy && in.ShedShare > ShedBudget
	if shed && in.Ready >= in.Replicas && in.Replicas+1 > up {
		up, why = b.Clamp(in.Replicas+1), Shed
	}
	switch {
	case up > in.Replicas:
		r.reset()
		return up, why
	case shed || need >= in.Replicas:
		r.reset()
		return in.Replicas, ""
	case r.lowSince.IsZero():
		r.lowSince = in.Now
	}
	delay := b.DelayOrDefault()
	r.recent = append(r.recent, needed{in.Now, need})
	for len(r.recent) > 1 && in.Now.Sub(r.recent[0].at) > delay/2 {
		r.recent = r.recent[1:]
	}
	if in.Now.Sub(r.lowSince) < delay {
		return in.Replicas, ""
	}
	n := 0
	for _, x := range r.recent {
		n = max(n, x.n)
	}
	r.reset()
	return n, Idle
}

// reset forgets the lower counts: the count changed, or a lower one no
// longer suffices.
func (r *Rule) reset() {
	r.lowSince = time.Time{}
	r.recent = r.recent[:0]
}
