package slo

import (
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/internal/quantile"
)

// Calibration's parameters: how many of the latest errors each stratum
// keeps, how many it needs before it is trusted, how often its quantile
// is recomputed (every calEvery errors, every error while it is not
// trusted, and at least every calRefresh while it is read), how long an
// error counts, and how long a stratum may shed with none of its queries
// finishing before it forgets its errors.
const (
	calStrata  = 6
	calWindow  = 256
	calMin     = 64
	calEvery   = 16
	calRefresh = 50 * time.Millisecond
	calStale   = time.Second
	calQuiet   = 200 * time.Millisecond
)

// The risk admission takes, its promise: of the queries it lets in with a
// prediction, no more than riskTarget (1 in 200) finish past their
// deadline. The margin leaves out the top share risk of the errors,
// between riskLow and riskHigh; every riskStep, once riskOutcomes queries
// have finished since the last step (twice the count at which the target
// expects one late), risk halves if more than riskTarget of them were
// late and grows by a quarter if fewer than half of that were.
const (
	riskTarget   = 0.005
	riskLow      = 0.005
	riskHigh     = 0.05
	riskStep     = 250 * time.Millisecond
	riskOutcomes = int(2 / riskTarget)
)

// calibration learns how far admission's prediction of a query's finish
// falls short of when it finished, from the queries admission let in
// behind at least one other. Errors are kept apart by stratum, the batch
// the query rode (1st, 2nd, ...; the deepest stratum takes the rest):
// queries further back are later by more. Each stratum's margin is the
// (1 − risk)-quantile of its latest calWindow errors that are under
// calStale old and newer than its latest quiet gap (below), trusted while
// there are calMin of them. A query that missed its deadline counts with
// the error it had by then, a lower bound, so misses raise the margin
// too. Every batch is calibrated, the first included: its start is
// predicted from the batches in flight (see Governor.Admit), so its
// errors are of the same kind as the others'.
//
// The risk is tuned from the share of those queries that finished late,
// toward riskTarget. The promise that matters is that share, not a
// percentile for every query: a fixed 99.5th percentile keeps the promise
// also for the many queries that are never near their deadline, and so,
// below the version's capacity, sheds queries near the margin that would
// have made it. With few late the margin leaves out more of the errors'
// tail; in overload, where every admitted query waits near its deadline,
// the late share rises and the margin goes back to the 99.5th percentile.
//
// Errors age out by time as well as by count so that a spell's margin
// does not outlive the spell. Counted alone, a spell's few large errors
// would set the margin until calWindow newer ones pushed them out; but the
// margin sheds most of the stratum, so newer ones come slowly, and
// admission would go on shedding most queries for seconds after the spell.
// Aging out after calStale is not enough for a stall (a collection, the
// processor taken): its errors shed nearly every query, none of the
// stratum's queries finishes, and nothing says the stall is over. So a
// stratum that sheds while none of its queries has finished for calQuiet,
// a quiet gap, forgets the errors before it and is not trusted: admission
// falls back on the fit's tail, lets some in, and learns afresh from them.
// A lasting slowdown keeps its margin, since the queries let in under it
// go on finishing late; a stratum that sheds nothing (idle, or its queries
// all admitted) keeps its errors for calStale.
type calibration struct {
	mu     sync.Mutex
	strata [calStrata]errWindow
	risk   float64   // the errors' top share the margin leaves out; 0 is riskLow
	ended  int       // queries finished since the risk's last step
	late   int       // of which past their deadline
	stepAt time.Time // the risk's last step
}

// errWindow holds a stratum's latest errors in a ring.
type errWindow struct {
	errs     [calWindow]time.Duration
	ats      [calWindow]int64 // when each error's query finished, Unix ns
	n        int              // errors held, up to calWindow
	next     int              // where the next one goes
	since    int              // errors since margin was computed
	margin   time.Duration
	trusted  bool
	computed time.Time       // when margin was
	shedAt   int64           // when the stratum last shed a query, Unix ns
	forgot   int64           // the errors stamped up to this, Unix ns, no longer count
	fresh    []time.Duration // scratch: the errors that count
	top      []time.Duration // scratch for the quantile
}

// stratumOf maps the batch a query rides (1 or more) to its stratum.
func stratumOf(j int) int { return min(max(j, 1), calStrata) - 1 }

// margin returns the margin of queries riding the j-th batch at now, and
// false when it has none to trust.
func (c *calibration) margin(j int, now time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.strata[stratumOf(j)]
	if now.Sub(w.computed) >= calRefresh {
		w.compute(now, c.quantile())
	}
	return w.margin, w.trusted
}

// shed records that admission shed a query that would have ridden the
// j-th batch, at now.
func (c *calibration) shed(j int, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.strata[stratumOf(j)].shedAt = now.UnixNano()
}

// observe records that a query riding the j-th batch finished at now, err
// after its prediction (negative: before), and whether that was past its
// deadline.
func (c *calibration) observe(j int, now time.Time, err time.Duration, late bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tune(now, late)
	w := &c.strata[stratumOf(j)]
	w.errs[w.next], w.ats[w.next] = err, now.UnixNano()
	w.next = (w.next + 1) % calWindow
	w.n = min(w.n+1, calWindow)
	if w.since++; w.since >= calEvery || (!w.trusted && w.n >= calMin) {
		w.compute(now, c.quantile())
	}
}

// quantile is the errors' quantile the margins take; c.mu held.
func (c *calibration) quantile() float64 { return 1 - max(c.risk, riskLow) }

// tune counts one finished query and steps the risk (see calibration);
// a step has every stratum recompute its margin when next read.
func (c *calibration) tune(now time.Time, late bool) {
	c.ended++
	if late {
		c.late++
	}
	if c.ended < riskOutcomes || now.Sub(c.stepAt) < riskStep {
		return
	}
	risk, share := max(c.risk, riskLow), float64(c.late)/float64(c.ended)
	switch {
	case share > riskTarget:
		risk = max(risk/2, riskLow)
	case share < riskTarget/2:
		risk = min(risk*5/4, riskHigh)
	}
	c.risk, c.ended, c.late, c.stepAt = risk, 0, 0, now
	for i := range c.strata {
		c.strata[i].computed = time.Time{}
	}
}

// compute recomputes the margin at now, the errors' q-quantile, from the
// errors that count: the latest ones, back to the first that is calStale
// old or stamped before the latest quiet gap. A gap is found here: the
// stratum shed after its latest error, and that error is calQuiet old.
// Errors come about in the order of their stamps, but for observers that
// stamp before they take the lock.
func (w *errWindow) compute(now time.Time, q float64) {
	w.since, w.computed = 0, now
	if w.n > 0 {
		latest := w.ats[(w.next-1+calWindow)%calWindow]
		if w.shedAt > latest && latest <= now.UnixNano()-int64(calQuiet) {
			w.forgot = latest
		}
	}
	cutoff := max(now.UnixNano()-int64(calStale), w.forgot)
	k := 0 // how many of the latest count
	for k < w.n && w.ats[(w.next-1-k+calWindow)%calWindow] > cutoff {
		k++
	}
	w.trusted = k >= calMin
	if !w.trusted {
		return
	}
	errs := w.errs[:w.n]
	if k < w.n {
		// The fresh ones end just before next and may wrap around.
		from := (w.next - k + calWindow) % calWindow
		if from < w.next {
			errs = append(w.fresh[:0], w.errs[from:w.next]...)
		} else {
			errs = append(append(w.fresh[:0], w.errs[from:]...), w.errs[:w.next]...)
		}
		w.fresh = errs
	}
	w.margin, w.top = quantile.High(errs, q, w.top)
}
