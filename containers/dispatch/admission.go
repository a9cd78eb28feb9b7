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
// The replicas are taken to be busy, and to take what is queued when they
// come free, as they do: the queries ahead of q and q itself, shared among
// the healthy replicas, k each, in rounds of at most the size their
// controllers send. q waits for the batch in progress (half
// of one, on average, taken to be the size of the next), then for its
// rounds, plus the tail delay once.
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
	k := (queued + replicas) / replicas // ⌈(queued + 1) / replicas⌉
	limit := max(1, min(d.opts.MaxBatch, d.batchSize(budget)))
	rounds := (k + limit - 1) / limit
	batch, tail := est.Estimate(min(k, limit))
	if batch <= 0 {
		return nil
	}
	finish := batch/2 + time.Duration(rounds)*batch + tail
	if finish <= budget-reserve {
		return nil
	}
	if d.metrics != nil {
		d.metrics.shed.Inc()
	}
	return fmt.Errorf("%w: model %s predicted to answer in %v (%d queued, %d replicas), past the %v left", ErrShed, d.name,
		finish.Round(time.Microsecond), queued, replicas, (budget - reserve).Round(time.Microsecond))
}

// batchSize is the smallest batch the healthy replicas' controllers would
// send to queries of this budget with no deadline yet pressing: the size
// the replicas take when queries wait, whatever the controller (a static
// size, AIMD's current one, the latency model's steady-state one).
func (d *Dispatcher) batchSize(budget time.Duration) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := NoLimit
	lanes := d.lanes()
	for _, r := range d.replicas {
		if r.isHealthy() {
			r.ctrlMu.Lock()
			n = min(n, d.batchSizeOf(r.ctrl, lanes, -1, budget))
			r.ctrlMu.Unlock()
		}
	}
	return n
}
