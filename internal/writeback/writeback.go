// Package writeback queues items for a background writer that sends them
// in batches: what the prediction cache's fills and the proxy's shared
// recent queries do to Redis, so that no query waits on the write.
package writeback

import (
	"context"
	"sync/atomic"
	"time"
)

// Queue holds up to a fixed number of items for Run to write in batches.
// Create it with New; Offer from any goroutine; Run in one.
type Queue[T any] struct {
	items   chan T
	batch   int
	final   time.Duration
	write   func(ctx context.Context, batch []T)
	stopped atomic.Bool
}

// New returns a queue of up to size items, written by write at most batch
// at a time. write bounds each call itself; once Run's context is done,
// what is still queued gets final in all.
func New[T any](size, batch int, final time.Duration, write func(ctx context.Context, batch []T)) *Queue[T] {
	return &Queue[T]{items: make(chan T, size), batch: max(1, batch), final: final, write: write}
}

// Offer queues v without waiting. It reports false, and drops v, when the
// queue is full or Run has returned. Best effort at the end: an Offer that
// races with Run's final drain may report true for an item never written
// (checking stopped and sending are not one step, and a lock around them
// would cost every offer for the sake of shutdown).
func (q *Queue[T]) Offer(v T) bool {
	if q.stopped.Load() {
		return false
	}
	select {
	case q.items <- v:
		return true
	default:
		return false
	}
}

// Run writes what is queued, a batch at a time, until ctx is done; then
// what is still queued, within the final time. A write is never cut short
// by ctx: each bounds itself. After Run returns, Offer refuses.
func (q *Queue[T]) Run(ctx context.Context) {
	defer q.stopped.Store(true)
	batch := make([]T, 0, q.batch)
	for ctx.Err() == nil { // once stopped, straight to the bounded drain below
		select {
		case v := <-q.items:
			q.write(context.WithoutCancel(ctx), q.drain(append(batch[:0], v)))
		case <-ctx.Done():
		}
	}
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.final)
	defer cancel()
	for batch = q.drain(batch[:0]); len(batch) > 0 && final.Err() == nil; batch = q.drain(batch[:0]) {
		q.write(final, batch)
	}
}

// drain appends queued items to batch, without waiting, up to its
// capacity.
func (q *Queue[T]) drain(batch []T) []T {
	for len(batch) < cap(batch) {
		select {
		case v := <-q.items:
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}
