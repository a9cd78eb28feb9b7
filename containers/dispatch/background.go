package dispatch

import (
	"context"
	"sync/atomic"
	"time"
)

type backgroundKey struct{}

// Background returns a context whose queries are the lowest priority
// class: offline work (batch jobs) that takes only the capacity online
// queries leave. A background query has no deadline, whatever ctx's: it
// queues after every other query, is never refused by admission nor
// counted in the queue admission predicts from, and waits until a replica
// is free of online work or a batch led by an online query has room left
// for it. It is bounded only by ctx's cancellation (ctx's deadline too
// still ends its wait, with ErrDeadline).
//
// A batch that a background query leads is sized so that an online query
// arriving just after it still makes its deadline: the size the replica's
// controller chooses for the latest online query's SLO when every query
// waits out one batch and rides its own (no staggering over lanes), as
// long as an online query came within Options.BackgroundIdle; with none
// in that time, up to the largest batch the replica takes. While online
// queries come, such batches are also paced (Pacer.Hold) as a batch of
// one online query would be, so that the replicas' starts stay staggered.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

func isBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// onlineSeen records the latest online query with a deadline: when it
// came and its whole budget, by which background batches are sized.
type onlineSeen struct {
	at     atomic.Int64 // unix nanoseconds; 0: none yet
	budget atomic.Int64 // nanoseconds
}

// saw records q, an online query; one without a deadline sets nothing.
func (o *onlineSeen) saw(q *query) {
	if q.deadline.IsZero() {
		return
	}
	if b := int64(q.deadline.Sub(q.enqueued)); o.budget.Load() != b {
		o.budget.Store(b)
	}
	o.at.Store(q.enqueued.UnixNano())
}

// onlineRecent reports whether an online query with a deadline came
// within BackgroundIdle.
func (d *Dispatcher) onlineRecent() bool {
	at := d.online.at.Load()
	return at != 0 && d.opts.Now().Sub(time.Unix(0, at)) <= d.opts.BackgroundIdle
}

// backgroundSize is the size of a batch that a background query leads on
// replica r (see Background); called without r's ctrlMu.
func (d *Dispatcher) backgroundSize(r *replica, sp spacing) int {
	if !d.onlineRecent() {
		return NoLimit
	}
	sp.lanes = 1
	r.ctrlMu.Lock()
	defer r.ctrlMu.Unlock()
	return d.batchSizeOf(r.ctrl, sp, -1, time.Duration(d.online.budget.Load()))
}
