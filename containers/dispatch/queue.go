// Package dispatch sends queries to the replicas of one model version. Each
// model version has one queue, ordered by deadline (earliest first) and
// shared by all its replicas; each replica pulls a batch when it has a free
// slot, so a fast replica takes more work and a slow one less, with no
// central scheduler guessing. Queries whose deadline has passed, or whose
// caller has gone, leave the queue without reaching a model. A replica that
// stops answering is ejected and its in-flight queries go back to the queue,
// to be retried elsewhere while their deadlines allow. Background queries
// (Background: batch jobs) are the lowest priority class: they queue after
// every online query and fill only the capacity online queries leave.
//
// dispatch decides nothing about time itself: it asks each replica's
// Controller for the next batch's size, and the version's Governor whether
// a query may queue (admission) and how long a free worker holds before
// taking its batch (pacing), and tells both how each batch ended. Package
// slo implements them; with none, batches take up to MaxBatch, every query
// is admitted, and no worker holds.
package dispatch

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

// ErrDeadline is returned for a query whose deadline passed before a model
// answered it.
var ErrDeadline = errors.New("deadline passed before a model answered")

// ErrDoomed is returned for a query answered before its deadline because
// no batch could any longer answer it in time (see Controller). Such an
// error is also ErrDeadline.
var ErrDoomed = errors.New("no batch could answer in time")

// doomedError is ErrDoomed for one query, and ErrDeadline.
type doomedError struct {
	model string
	left  time.Duration
}

func (e *doomedError) Error() string {
	return fmt.Sprintf("model %s could not answer in the %v left: no batch is that fast", e.model, e.left.Round(time.Microsecond))
}

func (e *doomedError) Is(target error) bool { return target == ErrDoomed || target == ErrDeadline }

// ErrStopped is returned for queries that a stopped queue could not answer.
var ErrStopped = errors.New("model version is shutting down")

// query is one input waiting for its answer.
type query struct {
	ctx      context.Context
	deadline time.Time // zero: none
	input    []byte
	enqueued time.Time
	index    int // position in the heap; -1 once taken out
	attempts int
	// background marks the lowest priority class (see Background): no
	// deadline, after every other query, never counted by admission.
	background bool
	reply      chan result // buffered 1; receives exactly one result

	// Set when the governor admitted the query with a prediction of its
	// finish: the Admitter to tell when it finishes, the prediction, and
	// the batch it was admitted to ride, counted as queue.starts counts
	// (0: none; see queue.take).
	admitter   Admitter
	prediction Prediction
	due        int
}

type result struct {
	out     rpc.Output
	err     error
	replica string
}

// deadlineHeap orders queries by deadline, earliest first; queries without
// one come after them, in arrival order, and background queries last.
type deadlineHeap []*query

func (h deadlineHeap) Len() int { return len(h) }
func (h deadlineHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	switch {
	case a.background != b.background:
		return b.background
	case a.deadline.IsZero() != b.deadline.IsZero():
		return b.deadline.IsZero()
	case !a.deadline.Equal(b.deadline):
		return a.deadline.Before(b.deadline)
	}
	return a.enqueued.Before(b.enqueued)
}
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	q := x.(*query)
	q.index = len(*h)
	*h = append(*h, q)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	q.index = -1
	*h = old[:len(old)-1]
	return q
}

// queue is the deadline-ordered queue of one model version.
type queue struct {
	mu sync.Mutex // guards h, background, starts, wake, waiting and stopped
	h  deadlineHeap
	// background counts the background queries in h.
	background int
	// starts counts the batches taken: the batch a query was admitted to
	// ride is its due in this count (see take).
	starts int
	// wake is closed and replaced when a query arrives while a worker
	// waits on it (waiting), so that a push allocates nothing otherwise.
	wake    chan struct{}
	waiting bool
	stopped bool
	now     func() time.Time
}

func newQueue(now func() time.Time) *queue {
	return &queue{wake: make(chan struct{}), now: now}
}

// push adds q, or reports ErrStopped.
func (qu *queue) push(q *query) error {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	if qu.stopped {
		return ErrStopped
	}
	heap.Push(&qu.h, q)
	if q.background {
		qu.background++
	}
	qu.wakeWaiters()
	return nil
}

// pop takes the head out; called with mu held.
func (qu *queue) pop() *query {
	q := heap.Pop(&qu.h).(*query)
	if q.background {
		qu.background--
	}
	return q
}

// wakeWaiters wakes the workers waiting for a query, if any.
func (qu *queue) wakeWaiters() {
	if qu.waiting {
		close(qu.wake)
		qu.wake, qu.waiting = make(chan struct{}), false
	}
}

// remove takes q out if it is still queued and reports whether it was.
func (qu *queue) remove(q *query) bool {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	if q.index < 0 {
		return false
	}
	heap.Remove(&qu.h, q.index)
	if q.background {
		qu.background--
	}
	return true
}

// take removes up to n live queries, earliest deadline first, whose
// PREDICT frame stays within maxFrame bytes (a query too large alone is
// taken alone, for the client to refuse); background queries join only
// while the batch holds fewer than fill. Queries that expired or whose
// caller left are answered and skipped. With none queued it returns nil
// and a channel closed when one arrives.
//
// Past n it goes on taking, up to limit, the queries at the head that
// admission let in to ride this batch or an earlier one (their due): a
// controller that chose a smaller size since they were admitted (AIMD
// after a miss, a latency fit that moved by a size) would otherwise
// leave them for the next batch, a whole batch later than admission
// promised. Admission's calibration would learn that batch as its
// error, and a margin of a whole batch sheds every query an emptier
// queue could not hold: the batches shrink, and the replicas answer
// less the more they are offered.
func (qu *queue) take(n, limit, fill, maxFrame int, dst []*query) ([]*query, <-chan struct{}) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	now := qu.now()
	size := rpc.PredictBaseLen
	this := qu.starts + 1 // the batch being taken, as due counts
	for qu.h.Len() > 0 {
		q := qu.h[0]
		if len(dst) >= n && (len(dst) >= limit || q.due <= 0 || q.due > this) {
			break
		}
		if err := q.ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = ErrDeadline
			}
			qu.pop()
			q.reply <- result{err: err}
			continue
		}
		if !q.deadline.IsZero() && !now.Before(q.deadline) {
			qu.pop()
			q.reply <- result{err: ErrDeadline}
			continue
		}
		if q.background && len(dst) >= fill {
			break // the rest are background queries too
		}
		if size += rpc.ItemLenPrefix + len(q.input); len(dst) > 0 && size > maxFrame {
			break // the next batch takes it
		}
		qu.pop()
		dst = append(dst, q)
	}
	if len(dst) == 0 {
		qu.waiting = true
		return nil, qu.wake
	}
	qu.starts++
	return dst, nil
}

// pending is the number of queued online queries and the batches taken
// so far, read together: what admission predicts from and promises
// against.
func (qu *queue) pending() (online, starts int) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	return qu.h.Len() - qu.background, qu.starts
}

// head returns the earliest-deadline query, the time left to its deadline
// (slack) and its whole budget, its deadline less its arrival (slo); the
// durations are -1 when the queue is empty (and the query nil) or the head
// has no deadline. background reports whether background queries are
// queued, and queued how many queries are, read under the same lock.
func (qu *queue) head() (q *query, slack, slo time.Duration, background bool, queued int) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	background, queued = qu.background > 0, qu.h.Len()
	if queued == 0 {
		return nil, -1, -1, background, 0
	}
	h := qu.h[0]
	if h.deadline.IsZero() {
		return h, -1, -1, background, queued
	}
	return h, h.deadline.Sub(qu.now()), h.deadline.Sub(h.enqueued), background, queued
}

// refuse answers q with err if it is still queued, taking it out.
func (qu *queue) refuse(q *query, err error) {
	if qu.remove(q) {
		q.reply <- result{err: err}
	}
}

// len is the number of queued queries.
func (qu *queue) len() int {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	return qu.h.Len()
}

// stop refuses new queries and answers the queued ones with err.
func (qu *queue) stop(err error) {
	qu.mu.Lock()
	defer qu.mu.Unlock()
	qu.stopped = true
	for qu.h.Len() > 0 {
		qu.pop().reply <- result{err: err}
	}
	qu.wakeWaiters()
}
