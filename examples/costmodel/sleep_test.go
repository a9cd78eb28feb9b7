package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleepPrecise(t *testing.T) {
	const d = 3 * time.Millisecond
	start := time.Now()
	if err := sleepPrecise(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < d {
		t.Fatalf("slept %v, want at least %v", got, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(5*time.Millisecond, cancel)
	if err := sleepPrecise(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sleep: got %v, want context.Canceled", err)
	}
}

// BenchmarkSleep compares how late the runtime's timer and sleepPrecise
// wake from the cost of a batch of one, a = 5 ms, b = 0.25 ms: late-µs/op
// is the mean time past the asked 5.25 ms.
func BenchmarkSleep(b *testing.B) {
	const d = 5250 * time.Microsecond
	for _, bc := range []struct {
		name  string
		sleep func(context.Context, time.Duration) error
	}{
		{"timer", sleepTimer},
		{"precise", sleepPrecise},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var late time.Duration
			for b.Loop() {
				start := time.Now()
				if err := bc.sleep(context.Background(), d); err != nil {
					b.Fatal(err)
				}
				late += time.Since(start) - d
			}
			b.ReportMetric(float64(late.Microseconds())/float64(b.N), "late-µs/op")
		})
	}
}
