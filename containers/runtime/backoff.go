package runtime

import (
	"context"
	"time"
)

// Backoff is how long a runtime waits before it replaces a replica that
// failed: Min after the first failure, and after one that came when the
// replica had run ResetAfter or longer; otherwise twice the last wait, at
// most Max. Its zero value (with the three set) is ready for use; one
// Backoff serves one replica.
type Backoff struct {
	Min, Max, ResetAfter time.Duration

	last time.Duration
}

// WithDefaults returns b with each field that is not positive set to the
// runtimes' default (Min 100 ms, Max 10 s, ResetAfter 30 s), and Max at
// least Min.
func (b Backoff) WithDefaults() Backoff {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&b.Min, 100*time.Millisecond)
	def(&b.Max, 10*time.Second)
	def(&b.ResetAfter, 30*time.Second)
	b.Max = max(b.Max, b.Min)
	return b
}

// Next is the wait after a run that lasted up.
func (b *Backoff) Next(up time.Duration) time.Duration {
	if b.last == 0 || up >= b.ResetAfter {
		b.last = b.Min
	} else {
		b.last = min(2*b.last, b.Max)
	}
	return b.last
}

// Sleep waits d, or until ctx ends; it reports whether the wait ran out
// (false: ctx ended).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
