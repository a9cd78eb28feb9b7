package slo_test

import (
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// costProfile is what profiling a model of 20 ms + 2 ms·n reports.
var costProfile = state.Profile{Lines: []state.ProfileLine{
	{Batch: 1, P50: 22 * time.Millisecond, P99: 24 * time.Millisecond},
	{Batch: 2, P50: 24 * time.Millisecond, P99: 26 * time.Millisecond},
	{Batch: 4, P50: 28 * time.Millisecond, P99: 30 * time.Millisecond},
	{Batch: 8, P50: 36 * time.Millisecond, P99: 38 * time.Millisecond},
}}

// TestSeededFit checks that a fit seeded from a profile predicts its line
// and its tail before any live batch, and that live batches then count.
func TestSeededFit(t *testing.T) {
	f := slo.NewFit(0, 0.99)
	f.Seed(costProfile)
	// The line runs a quarter of the way from the medians to the p99s
	// (three medians and one p99 a line), and the tail reaches the p99s.
	a, b, tail := f.Params()
	if !near(a, 20500*time.Microsecond) || !near(b, 2*time.Millisecond) || !near(a+tail, 22*time.Millisecond) {
		t.Errorf("seeded fit a=%v b=%v tail=%v, want 20.5ms 2ms 1.5ms", a, b, tail)
	}
	// With an SLO of 80 ms over one lane a batch may take 40 ms: 9 items.
	if got := f.Plan(80*time.Millisecond, 1, 0, 64); got != 9 {
		t.Errorf("seeded Plan = %d, want 9", got)
	}
	f.Seed(state.Profile{}) // no lines: nothing changes
	if a2, _, _ := f.Params(); a2 != a {
		t.Errorf("an empty profile changed a from %v to %v", a, a2)
	}
	for range 200 {
		f.Observe(4, 48*time.Millisecond) // slower than profiled
	}
	if typical, _ := f.Estimate(4); typical < 40*time.Millisecond {
		t.Errorf("after live batches of 48 ms, Estimate(4) = %v, want them to dominate", typical)
	}
}

// TestSeededController checks that the latency model's controllers start
// from the profile, and the other controllers ignore it.
func TestSeededController(t *testing.T) {
	newC := slo.Batching{Controller: slo.ControllerLatencyModel, Quantile: 0.99, Decrease: 0.9}.NewSeededController(&costProfile)
	if got := newC().BatchSize(80*time.Millisecond, 80*time.Millisecond); got != 9 {
		t.Errorf("seeded latency model's first batch: %d, want 9 (planned from the profile)", got)
	}
	unseeded := slo.Batching{Controller: slo.ControllerLatencyModel, Quantile: 0.99, Decrease: 0.9, Size: 64}.NewSeededController(nil)
	if got := unseeded().BatchSize(80*time.Millisecond, 80*time.Millisecond); got != 64 {
		t.Errorf("unseeded latency model's first batch: %d, want its cap 64", got)
	}
	static := slo.Batching{Controller: slo.ControllerStatic, Size: 3}.NewSeededController(&costProfile)
	if got := static().BatchSize(80*time.Millisecond, 80*time.Millisecond); got != 3 {
		t.Errorf("seeded static controller: %d, want 3", got)
	}
	gov := slo.Batching{Admission: true, Quantile: 0.99}.NewSeededGovernor(&costProfile)
	if typical, _ := gov.Fit().Estimate(1); !near(typical, 22500*time.Microsecond) {
		t.Errorf("seeded governor's Estimate(1) = %v, want 22.5ms", typical)
	}
}

func near(got, want time.Duration) bool {
	d := got - want
	return d > -want/20 && d < want/20
}
