package slo

import (
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
)

// Off sends every query alone: the baseline the others are measured
// against.
type Off struct{}

// BatchSize implements dispatch.Controller.
func (Off) BatchSize(time.Duration, time.Duration) int { return 1 }

// Observe implements dispatch.Controller.
func (Off) Observe(int, time.Duration) {}

var _ dispatch.Controller = Off{}

// Static chooses the same size every time, as the max-batch knob of
// serving systems without an SLO.
type Static int

// BatchSize implements dispatch.Controller.
func (s Static) BatchSize(time.Duration, time.Duration) int { return int(s) }

// Observe implements dispatch.Controller.
func (Static) Observe(int, time.Duration) {}

var _ dispatch.Controller = Static(1)

// AIMD is Clipper's controller: the batch size grows by one while full
// batches finish within the steady-state budget and shrinks by a factor on
// a batch that did not. Only full batches grow it: a lightly loaded
// replica sends small batches whatever the size, and growing on those
// would leave a size no batch has tried.
//
// The budget is Clipper's, half the head query's SLO, where batch starts
// are not staggered: a query may wait out a whole batch and then ride its
// own. Where the Governor staggers them over lanes (SetLanes) a query
// waits for the next start, and the budget is the latency model's for the
// same wait (Fit.Plan): between half the SLO, before any batch, and
// lanes/(lanes+1) of it once the typical batch is as long as the budget.
// Half the SLO there would hold AIMD to smaller batches than the wait
// allows, and so to a lower rate.
//
// AIMD is safe for concurrent use (a replica's slots share it).
type AIMD struct {
	// Decrease multiplies the size after a miss; 0 means 0.9, Clipper's.
	Decrease float64
	// Max caps the size; 0 means no cap beyond the dispatcher's.
	Max int

	mu      sync.Mutex // guards the fields below
	size    float64
	budget  time.Duration // the budget of the last size chosen
	lanes   int           // over which batch starts are staggered; 0 or 1: not staggered
	typical time.Duration // the typical batch's service time, as the pacer spaces starts by it
}

// BatchSize implements dispatch.Controller.
func (c *AIMD) BatchSize(_, slo time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size < 1 {
		c.size = 1
	}
	if slo > 0 {
		c.budget = seconds(steadyLongest(slo.Seconds(), c.lanes, c.typical.Seconds()))
	}
	return int(c.size)
}

// SetLanes is told by the dispatcher, from the Governor's Spacing, over
// how many lanes batch starts are staggered and the typical batch's
// service time; the budget follows (see AIMD).
func (c *AIMD) SetLanes(lanes int, typical time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lanes, c.typical = lanes, typical
}

// Observe implements dispatch.Controller.
func (c *AIMD) Observe(n int, latency time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.budget > 0 && latency > c.budget:
		c.decrease()
	case n >= int(c.size) && (c.Max <= 0 || c.size < float64(c.Max)):
		c.size++
	}
}

// ObserveOverrun implements dispatch.OverrunObserver: a batch abandoned
// past its queries' deadlines after more than the budget missed it, and
// shrinks the size as a miss does. One abandoned sooner (sent with less
// slack than the budget) tells nothing of the budget.
func (c *AIMD) ObserveOverrun(_ int, atLeast time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.budget > 0 && atLeast > c.budget {
		c.decrease()
	}
}

// decrease multiplies the size by Decrease; called with mu held.
func (c *AIMD) decrease() {
	d := c.Decrease
	if d <= 0 || d >= 1 {
		d = 0.9
	}
	c.size = max(1, c.size*d)
}

var (
	_ dispatch.Controller      = (*AIMD)(nil)
	_ dispatch.OverrunObserver = (*AIMD)(nil)
)

// LatencyModel fits latency(n) ≈ a + b·n with a high quantile of the
// residuals on top (see Fit) and chooses the steady-state size of the head
// query's SLO, refusing a head that can no longer make its deadline. It
// needs no tuning: the fit is learned from the replica's own batches.
type LatencyModel struct {
	fit     *Fit
	max     int
	lanes   int           // over which batch starts are staggered; 0 or 1: not staggered
	typical time.Duration // the typical batch's service time, as the pacer spaces starts by it

	mu      sync.Mutex // guards learned and probing
	learned time.Time  // when the latest batch was observed or probe sent
	probing bool       // a probe was sent and no batch observed since
}

// NewLatencyModel returns a LatencyModel planning against the given
// quantile of its residuals (0.99 when outside (0, 1)) over its last
// window batches (FitWindow when ≤ 0); max caps the size (0: no cap beyond
// the dispatcher's).
func NewLatencyModel(quantile float64, window, max int) *LatencyModel {
	return &LatencyModel{fit: NewFit(window, quantile), max: max}
}

// BatchSize implements dispatch.Controller: the steady-state size of the
// head query's SLO (Fit.Plan), the largest batch for which a query that
// waits out the batch in progress and then rides its own still makes its
// deadline; the batch takes fewer when fewer are queued. With no deadline
// in sight it chooses the cap. The head's slack decides only whether it is
// sent at all: a head that cannot typically make its deadline even alone
// gets 0, and the dispatcher answers it at once rather than spend a batch
// on it.
//
// The batch is not cut to the head's slack: under overload the heads of a
// long queue have little slack, so batches cut to it shrink, pay their
// fixed cost more often, and the queue ages further.
//
// A head is refused only while the fit is current: when neither a batch
// was observed nor a probe sent for the head's whole SLO, the fit has had
// every head refused for that long and learned nothing since, and the
// head is sent as a probe, at most one an SLO. A spell that made the fit
// slower than the SLO (a fixed cost a above it) would otherwise refuse
// every later query for good, with the replica idle. The next batch
// observed after a probe, the probe's or one that was in flight, starts
// the fit afresh: either is newer than anything the fit held. A probe
// that fails ends no probe (an abandoned batch reaches the fit only as an
// overrun, see ObserveOverrun), and the next comes an SLO later.
//
// The clock is the process's (time.Now), not the dispatcher's: the
// probe's spacing needs no more than that.
func (c *LatencyModel) BatchSize(slack, slo time.Duration) int {
	limit := c.max
	if limit <= 0 {
		limit = dispatch.NoLimit
	}
	if slo > 0 {
		limit = c.fit.Plan(slo, c.lanes, c.typical, limit)
	}
	if slack < 0 || c.fit.Largest(slack, limit) > 0 {
		return limit
	}
	if slo <= 0 {
		return 0 // a deadline as old as the query: no probe can help it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.learned) < slo {
		return 0
	}
	c.probing, c.learned = true, time.Now()
	return limit
}

// Observe implements dispatch.Controller. The first batch observed after
// a probe replaces what the fit held (see BatchSize).
func (c *LatencyModel) Observe(n int, latency time.Duration) {
	c.mu.Lock()
	probe := c.probing
	c.learned, c.probing = time.Now(), false
	c.mu.Unlock()
	if probe {
		c.fit.restart(n, latency)
		return
	}
	c.fit.Observe(n, latency)
}

// ObserveOverrun implements dispatch.OverrunObserver: the fit records the
// abandoned batch as Fit.ObserveOverrun does. It neither ends a probe nor
// counts as learning (see BatchSize): a probe that overruns is one that
// failed, and the next comes an SLO later.
func (c *LatencyModel) ObserveOverrun(n int, atLeast time.Duration) { c.fit.ObserveOverrun(n, atLeast) }

// SetLanes is told by the dispatcher, from the Governor's Spacing, over
// how many lanes batch starts are staggered and the typical batch's
// service time, by which the pacer spaces them: while the batches are
// alike a query then waits at most a 1/lanes share of a batch for its own
// to start, and the steady-state size grows to match (Fit.Plan).
func (c *LatencyModel) SetLanes(lanes int, typical time.Duration) {
	c.lanes, c.typical = lanes, typical
}

var (
	_ dispatch.Controller      = (*LatencyModel)(nil)
	_ dispatch.OverrunObserver = (*LatencyModel)(nil)
)
