package dispatch

import (
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/internal/quantile"
)

// Calibration's parameters: how many of the latest errors each stratum
// keeps, how many it needs before it is trusted, how often its quantile
// is recomputed, and the quantile (admission's promise: the queries it
// lets in finish in time but for about 1 in 200 at the margin), and how
// long a stratum's errors are kept once none come.
const (
	calStrata   = 6
	calWindow   = 256
	calMin      = 64
	calEvery    = 16
	calQuantile = 0.995
	calStale    = time.Second
)

// calibration learns how far admission's prediction of a query's finish
// falls short of when it finished, from the queries admission let in
// behind at least one other. Errors are kept apart by stratum, the batch
// the query rode (1st, 2nd, ...; the deepest stratum takes the rest):
// queries further back are later by more. Each stratum's margin is the
// calQuantile of its latest calWindow errors, trusted while it has calMin
// of them and its latest is under calStale old; an error that comes after
// calStale without any starts the stratum afresh, so that a margin that
// came to shed every query of its stratum does not outlive the load that
// made it. A query that missed its deadline counts with the error it had
// by then, a lower bound, so misses raise the margin too.
//
// The first batch was left out while admission took the worst wait for
// its start: its queries then finished well before their prediction
// whenever a batch was about to leave, and a margin learned from them let
// in too much when none was (one replica at twice its capacity answered
// about 550 of 2,000 queries in time, against about 1,050 with the fit's
// tail). Timed from the batches in flight, its start is predicted, and
// the first batch is calibrated like the others.
type calibration struct {
	mu     sync.Mutex
	strata [calStrata]errWindow
}

// errWindow holds a stratum's latest errors in a ring.
type errWindow struct {
	errs   [calWindow]time.Duration
	n      int // errors held, up to calWindow
	next   int // where the next one goes
	since  int // errors since margin was computed
	margin time.Duration
	latest time.Time       // of the latest error
	top    []time.Duration // scratch for the quantile
}

// stratumOf maps the batch a query rides (1 or more) to its stratum.
func stratumOf(j int) int { return min(max(j, 1), calStrata) - 1 }

// margin returns the margin of queries riding the j-th batch at now, and
// false when it has none to trust.
func (c *calibration) margin(j int, now time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.strata[stratumOf(j)]
	return w.margin, w.n >= calMin && now.Sub(w.latest) < calStale
}

// observe records that a query riding the j-th batch finished at now, err
// after its prediction (negative: before).
func (c *calibration) observe(j int, now time.Time, err time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.strata[stratumOf(j)]
	if now.Sub(w.latest) >= calStale {
		w.n, w.next, w.since, w.margin = 0, 0, 0, 0
	}
	w.latest = now
	w.errs[w.next] = err
	w.next = (w.next + 1) % calWindow
	w.n = min(w.n+1, calWindow)
	w.since++
	if w.n >= calMin && (w.since >= calEvery || w.n == calMin) {
		w.since = 0
		w.margin, w.top = quantile.High(w.errs[:w.n], calQuantile, w.top)
	}
}
