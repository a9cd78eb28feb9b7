//go:build !linux

package main

import (
	"context"
	"time"
)

// sleepPrecise waits d, or until ctx is done, on the runtime's timer: the
// nanosleep of the Linux build is not portable, and elsewhere the timer's
// lateness is the platform's.
func sleepPrecise(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
