package slo

import (
	"fmt"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
)

// Admit implements dispatch.Admitter: it predicts the finish of the
// arriving query q from the queue, the pacer and the fit, and refuses q
// (dispatch.ErrShed) when that is past its deadline less its reserve
// (dispatch.WithReserve). Without admission (Batching.Admission off) it
// admits every query.
//
// Each free worker takes up to n of the queue at once, n the size the
// replicas' controllers send (Arrival.Sizes): q rides the j-th batch to
// start, j = ⌈(queued+1)/n⌉. The first is expected to start when a lane
// (healthy replicas times slots) comes free: now if one is, else when the
// earliest batch in flight is expected to end, its start plus the
// estimate for its size; and, while the pacer staggers the replicas, no
// earlier than a 1/lanes share of a service time after the latest start
// (see pacer.nextStart). Over the lanes later batches start a 1/lanes
// share of a batch's service time L apart, so the j-th is expected to
// start at first + (j-1)·L/lanes from now; L is the estimate for a full
// batch of n, which is what the batches ahead are when a queue forms. q
// then takes its own batch's estimate, of min(queued+1, n). The first
// start is timed from the batches in flight, not taken as the worst wait
// for it (L/lanes when paced, L when not), so that a query arriving as a
// batch is about to leave is let in: near the top rate the worst wait
// sheds queries of which nearly all would make it.
//
// To that prediction admission adds a margin for its error, calibrated:
// a high percentile of how late the queries it admitted to the same batch
// index recently finished after their prediction, the 99.5th or lower
// while few of them finish past their deadline (see calibration). Until
// the calibration has enough recent queries it is the fit's tail, the
// quantile of one batch's delay over its estimate, once for each batch
// whose delay q waits out on its lane (the one in flight, those ahead of
// q there, and q's own): safe but dear, since the batches' delays do not
// all fall on one query.
//
// Before the fit has seen a batch q is admitted: there is too little to
// refuse on, and the deadline still bounds its wait. The dispatcher asks
// only for queries with a deadline, a healthy replica and a non-empty
// queue (see dispatch.Arrival).
func (g *Governor) Admit(a dispatch.Arrival) (dispatch.Prediction, error) {
	if g.est == nil {
		return dispatch.Prediction{}, nil
	}
	budget := a.Deadline.Sub(a.Arrived)
	n := a.Sizes.BatchSize(budget)
	full, tail := g.est.Estimate(n)
	if full <= 0 {
		return dispatch.Prediction{}, nil
	}
	own := full
	if a.Queued+1 < n { // else its own batch is a full one: asked already
		if own, tail = g.est.Estimate(a.Queued + 1); own <= 0 {
			return dispatch.Prediction{}, nil
		}
	}
	lanes := a.Replicas * a.Slots
	first := g.pace.nextStart(a.Arrived, lanes, g.paced)
	predicted, j, batches := predictFinish(a.Queued, n, lanes, first, full, own)
	margin, ok := g.cal.margin(j, a.Arrived)
	if !ok {
		margin = time.Duration(batches) * tail
	}
	if finish := predicted + margin; finish > budget-a.Reserve {
		g.cal.shed(j, a.Arrived)
		return dispatch.Prediction{}, fmt.Errorf("%w: model %s predicted to answer in %v (%d queued, %d replicas), past the %v left", dispatch.ErrShed, a.Model,
			finish.Round(time.Microsecond), a.Queued, a.Replicas, (budget - a.Reserve).Round(time.Microsecond))
	}
	return dispatch.Prediction{Arrived: a.Arrived, Deadline: a.Deadline, Finish: predicted, Batch: j}, nil
}

// Finished implements dispatch.Admitter: the calibration learns how late
// the query finished, at now or, expired, at the later of now and its
// deadline, against its prediction, and whether that was past its
// deadline (an expired query was). The error is stamped with now, not the
// deadline: a query refused as doomed ends before its deadline, and a
// stamp ahead of the clock would date the stratum's latest error in the
// future.
func (g *Governor) Finished(p dispatch.Prediction, now time.Time, expired bool) {
	t := now
	if expired {
		t = later(now, p.Deadline)
	}
	g.cal.observe(p.Batch, now, t.Sub(p.Arrived)-p.Finish, expired || t.After(p.Deadline))
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// predictFinish is when a query joining queued others finishes, with no
// delays (see admit): batches of n over lanes lanes, the first starting
// after first, a full one taking full and the query's own own. It also
// returns the batch the query rides, j, and the batches whose delays it
// waits out on its lane: the one in flight, those ahead of it there, and
// its own.
func predictFinish(queued, n, lanes int, first, full, own time.Duration) (finish time.Duration, j, batches int) {
	l := max(1, lanes)
	j = (queued + n) / n  // the batch q rides: ⌈(queued + 1) / n⌉
	onLane := 1 + (j-1)/l // batches on q's lane before its own, the one in flight included
	return first + time.Duration(j-1)*full/time.Duration(l) + own, j, onLane + 1
}
