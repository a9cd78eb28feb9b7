package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrShed is wrapped by the error Predict returns for a query it refused
// because it was predicted to miss its deadline.
var ErrShed = errors.New("shed: would miss SLO")

type reserveKey struct{}

// WithReserve returns a context whose queries are shed unless predicted to
// finish reserve before their deadline: how lower priority classes give
// way first as the queue grows.
func WithReserve(ctx context.Context, reserve time.Duration) context.Context {
	if reserve <= 0 {
		return ctx
	}
	return context.WithValue(ctx, reserveKey{}, reserve)
}

func reserveOf(ctx context.Context) time.Duration {
	r, _ := ctx.Value(reserveKey{}).(time.Duration)
	return r
}

// admit predicts q's finish from the queue and the estimator and refuses
// q when it is past q's deadline less reserve.
//
// Each free worker takes up to n of the queue at once, n the size the
// controllers send: q rides the j-th batch to start, j = ⌈(queued+1)/n⌉.
// The first is expected to start when a lane (healthy replicas times
// slots) comes free: now if one is, else when the earliest batch in
// flight is expected to end, its start plus the estimate for its size;
// and, while the dispatcher paces its replicas, no earlier than a 1/lanes
// share of a service time after the latest start (see pacer.nextStart).
// Over the lanes later batches start a 1/lanes share of a batch's service
// time L apart, so the j-th is expected to start at first + (j-1)·L/lanes
// from now; L is the estimate for a full batch of n, which is what the
// batches ahead are when a queue forms. q then takes its own batch's
// estimate, of min(queued+1, n).
// Timing the first start from the batches in flight, rather than taking
// the worst wait for it (L/lanes when paced, L when not), is what lets in
// a query that arrives as a batch is about to leave: near the top rate
// the worst wait shed 2-6% of the queries of which nearly all would have
// made it (docs/benchmarks.md).
//
// To that prediction admission adds a margin for its error, calibrated:
// a high percentile of how late the queries it admitted to the same batch
// index recently finished after their prediction, the 99.5th or lower
// while few of them finish past their deadline (see calibration).
// Until the calibration has enough recent queries it is the fit's tail,
// the quantile of one batch's delay over its estimate, once for each
// batch whose delay q waits out on its lane (the one in flight, those
// ahead of q there, and q's own): safe but dear, since the batches'
// delays do not all fall on one query.
//
// With no healthy replica, with an empty queue, or before the estimator
// has seen a batch, q is admitted: there is nothing to predict from (or
// too little to refuse on), and the deadline still bounds its wait.
func (d *Dispatcher) admit(est *estimator, q *query, reserve time.Duration) error {
	replicas := int(d.healthy.Load())
	if replicas == 0 {
		return nil
	}
	queued := d.q.len()
	if queued == 0 {
		// Admitted whatever the estimate says, so that batches keep coming
		// to learn from even after a bad spell made it pessimistic.
		return nil
	}
	budget := q.deadline.Sub(q.enqueued)
	n := max(1, min(d.opts.MaxBatch, d.batchSize(budget)))
	full, tail := est.Estimate(n)
	if full <= 0 {
		return nil
	}
	own := full
	if queued+1 < n { // else its own batch is a full one: asked already
		if own, tail = est.Estimate(queued + 1); own <= 0 {
			return nil
		}
	}
	lanes := replicas * d.opts.Slots
	first := d.pace.nextStart(q.enqueued, lanes, d.pacing.Load())
	predicted, j, batches := predictFinish(queued, n, lanes, first, full, own)
	margin, ok := est.cal.margin(j, q.enqueued)
	if !ok {
		margin = time.Duration(batches) * tail
	}
	if finish := predicted + margin; finish > budget-reserve {
		est.cal.shed(j, q.enqueued)
		if d.metrics != nil {
			d.metrics.shed.Inc()
		}
		return fmt.Errorf("%w: model %s predicted to answer in %v (%d queued, %d replicas), past the %v left", ErrShed, d.name,
			finish.Round(time.Microsecond), queued, replicas, (budget - reserve).Round(time.Microsecond))
	}
	q.est, q.predicted, q.batch = est, predicted, j
	return nil
}

// calibrate tells q's estimator's calibration how late q finished, at the
// later of now() and by, against its prediction, and whether that was past
// its deadline (an expired query was); queries admitted without a
// prediction tell nothing (and do not read the clock). The error is
// stamped with now(), not by: a query refused as doomed ends before its
// deadline, and a stamp ahead of the clock would date the stratum's
// latest error in the future.
func (q *query) calibrate(now func() time.Time, by time.Time, expired bool) {
	if q.est != nil {
		n := now()
		t := later(n, by)
		q.est.cal.observe(q.batch, n, t.Sub(q.enqueued)-q.predicted, expired || t.After(q.deadline))
	}
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

// batchSize is the smallest batch the healthy replicas' controllers would
// send to queries of this budget with no deadline yet pressing: the size
// the replicas take when queries wait, whatever the controller (a static
// size, AIMD's current one, the latency model's steady-state one).
func (d *Dispatcher) batchSize(budget time.Duration) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := NoLimit
	sp := d.spacing()
	for _, r := range d.replicas {
		if r.isHealthy() {
			r.ctrlMu.Lock()
			n = min(n, d.batchSizeOf(r.ctrl, sp, -1, budget))
			r.ctrlMu.Unlock()
		}
	}
	return n
}
