// Package rolling counts events over a rolling span of time: the
// attainment of an SLO over its window, and selection's guard.
package rolling

import (
	"sync"
	"time"
)

// windowBuckets is how many buckets a Window divides its span into: the
// attainment it reports forgets its oldest queries a bucket at a time.
const windowBuckets = 60

// Window counts queries answered within and past their SLO over a rolling
// span of time. Safe for concurrent use.
type Window struct {
	span  time.Duration
	width time.Duration

	mu      sync.Mutex // guards buckets
	buckets [windowBuckets]bucket
}

type bucket struct {
	epoch       int64 // which bucket-width period of time it counts
	good, total uint64
}

// NewWindow returns a window over span (a minute if span ≤ 0).
func NewWindow(span time.Duration) *Window {
	if span <= 0 {
		span = time.Minute
	}
	return &Window{span: span, width: max(span/windowBuckets, time.Nanosecond)}
}

// Span is the window's span.
func (w *Window) Span() time.Duration { return w.span }

// Record counts one query answered at now, within its SLO or not.
func (w *Window) Record(now time.Time, within bool) {
	e := now.UnixNano() / int64(w.width)
	w.mu.Lock()
	defer w.mu.Unlock()
	b := &w.buckets[e%windowBuckets]
	if b.epoch != e {
		*b = bucket{epoch: e}
	}
	b.total++
	if within {
		b.good++
	}
}

// Attainment is the fraction of the queries of the last span, as of now,
// answered within their SLO, and how many there were. With none it is 1.
func (w *Window) Attainment(now time.Time) (fraction float64, total uint64) {
	e := now.UnixNano() / int64(w.width)
	var good uint64
	w.mu.Lock()
	for _, b := range w.buckets {
		if b.total > 0 && b.epoch > e-windowBuckets && b.epoch <= e {
			good += b.good
			total += b.total
		}
	}
	w.mu.Unlock()
	if total == 0 {
		return 1, 0
	}
	return float64(good) / float64(total), total
}
