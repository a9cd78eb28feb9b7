package writeback

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a write function that keeps every batch.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
}

func (r *recorder) write(_ context.Context, batch []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, slices.Clone(batch))
}

func (r *recorder) all() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

func TestQueueWritesEverythingInBatchesAndDrainsOnStop(t *testing.T) {
	var r recorder
	q := New(100, 4, time.Second, r.write)
	for i := range 10 {
		if !q.Offer(i) {
			t.Fatalf("Offer(%d) refused with room in the queue", i)
		}
	}
	// Stopped before it starts: everything queued is written on the way
	// out, in batches of at most 4.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.Run(ctx)
	if got := r.all(); !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("written %v; want 0..9 in order", got)
	}
	for _, b := range r.batches {
		if len(b) > 4 {
			t.Errorf("a batch of %d; want at most 4", len(b))
		}
	}
	if q.Offer(10) {
		t.Error("Offer accepted after Run returned")
	}
}

func TestQueueRefusesWhenFull(t *testing.T) {
	q := New(2, 1, time.Second, func(context.Context, []int) {})
	if !q.Offer(1) || !q.Offer(2) {
		t.Fatal("refused with room")
	}
	if q.Offer(3) {
		t.Error("accepted a third item in a queue of two")
	}
}

// TestQueueWritesWhileRunning runs the queue in a synctest bubble: once
// every goroutine in it is blocked, Run has written what was offered,
// before it is stopped.
func TestQueueWritesWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		q := New(10, 8, time.Second, r.write)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); q.Run(ctx) }()
		q.Offer(7)
		synctest.Wait()
		if got := r.all(); !slices.Equal(got, []int{7}) {
			t.Errorf("written while running %v; want [7]", got)
		}
		cancel()
		<-done
	})
}

func TestFinalDrainStopsAtItsDeadline(t *testing.T) {
	calls := 0
	q := New(10, 1, 20*time.Millisecond, func(ctx context.Context, _ []int) {
		calls++
		// A write that hangs until its context's deadline, as a real one
		// bounds itself: here to a minute.
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		<-ctx.Done()
	})
	for i := range 5 {
		q.Offer(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.Run(ctx)
	if calls != 1 {
		t.Errorf("%d writes after the final deadline passed in the first; want 1", calls)
	}
}
