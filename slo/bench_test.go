package slo_test

import (
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/slo"
)

// BenchmarkBatch is what the latency model costs per batch on the
// dispatch path: the replica's controller chooses a size, and the batch's
// latency is observed (which makes the next choice refit), with a full
// window of observations held.
func BenchmarkBatch(b *testing.B) {
	c := slo.NewLatencyModel(0.99, 0, 64)
	for i := range slo.FitWindow {
		n := 1 + i%32
		c.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond+time.Duration(i%7)*100*time.Microsecond)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n := c.BatchSize(15*time.Millisecond, 20*time.Millisecond)
		c.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond+time.Duration(i%7)*100*time.Microsecond)
	}
}

// BenchmarkAdmission is what admission's estimate costs per query when no
// batch finished since the last query: the fit is current.
func BenchmarkAdmission(b *testing.B) {
	f := slo.NewFit(0, 0.99)
	for i := range slo.FitWindow {
		n := 1 + i%32
		f.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		f.Estimate(16)
	}
}
