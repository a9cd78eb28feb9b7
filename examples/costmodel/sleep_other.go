//go:build !linux

package main

import (
	"context"
	"time"
)

// sleepPrecise is sleepTimer: the nanosleep of the Linux build is not
// portable, and elsewhere the timer's lateness is the platform's.
func sleepPrecise(ctx context.Context, d time.Duration) error { return sleepTimer(ctx, d) }
