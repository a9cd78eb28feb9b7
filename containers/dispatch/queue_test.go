package dispatch

import (
	"context"
	"testing"
	"time"
)

// TestTakeRidesTheAdmittedBatch: past the controller's size a batch takes
// the queries admission let in to ride it or an earlier one, up to the
// limit, and stops at the first that was admitted to a later batch or
// without a promise.
func TestTakeRidesTheAdmittedBatch(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		dues     []int // of the queued queries, in deadline order; the queue has taken 2 batches
		n, limit int
		want     int
	}{
		{"none promised", []int{0, 0, 0, 0}, 2, 64, 2},
		{"promised to this batch", []int{3, 3, 3, 4}, 2, 64, 3},
		{"promised to an earlier batch", []int{2, 3, 3, 3, 4}, 2, 64, 4},
		{"the limit holds", []int{3, 3, 3, 3}, 2, 3, 3},
		{"a later promise stops it", []int{3, 4, 3}, 1, 64, 1},
		{"a query without one stops it", []int{3, 0, 3}, 1, 64, 1},
		{"fewer promised than the size", []int{3, 4, 4}, 2, 64, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qu := newQueue(func() time.Time { return now })
			qu.starts = 2
			for i, due := range tc.dues {
				q := &query{ctx: context.Background(), deadline: now.Add(time.Second + time.Duration(i)), enqueued: now,
					due: due, reply: make(chan result, 1)}
				if err := qu.push(q); err != nil {
					t.Fatal(err)
				}
			}
			batch, _ := qu.take(tc.n, tc.limit, tc.limit, 1<<20, nil)
			if len(batch) != tc.want {
				t.Fatalf("took %d, want %d", len(batch), tc.want)
			}
			if queued, starts := qu.pending(); queued != len(tc.dues)-tc.want || starts != 3 {
				t.Errorf("after the take: %d queued, %d batches taken; want %d and 3", queued, starts, len(tc.dues)-tc.want)
			}
		})
	}
}

// TestHeadCountsTheQueue: head reports the earliest deadline's query and
// how many are queued, from one read.
func TestHeadCountsTheQueue(t *testing.T) {
	now := time.Now()
	qu := newQueue(func() time.Time { return now })
	if h, slack, _, _, queued := qu.head(); h != nil || slack != -1 || queued != 0 {
		t.Fatalf("empty: head %v, slack %v, %d queued; want nil, -1, 0", h, slack, queued)
	}
	var first *query
	for i := range 3 {
		q := &query{ctx: context.Background(), deadline: now.Add(time.Duration(3-i) * time.Second), enqueued: now, reply: make(chan result, 1)}
		if err := qu.push(q); err != nil {
			t.Fatal(err)
		}
		first = q
	}
	if h, slack, _, _, queued := qu.head(); h != first || slack != time.Second || queued != 3 {
		t.Fatalf("head %p (want %p), slack %v, %d queued; want 1s and 3", h, first, slack, queued)
	}
}
