package dispatch

import (
	"testing"
	"time"
)

func TestPredictFinish(t *testing.T) {
	ms := time.Millisecond
	// A full batch of 10 takes 10ms; the query's own, when smaller, 6ms.
	cases := []struct {
		name             string
		queued, lanes    int
		first, own, want time.Duration
	}{
		{"first batch: its start, then its own", 3, 2, 2 * ms, 6 * ms, 2*ms + 6*ms},
		{"first batch leaving now", 3, 2, 0, 6 * ms, 6 * ms},
		{"the 10th query ahead still fits the first batch", 9, 2, 5 * ms, 10 * ms, 5*ms + 10*ms},
		{"the 11th rides the second start, half a batch later", 10, 2, 5 * ms, 10 * ms, 5*ms + 5*ms + 10*ms},
		{"the fourth start over two lanes", 35, 2, 1 * ms, 10 * ms, 1*ms + 3*5*ms + 10*ms},
		{"one lane: batches back to back", 25, 1, 4 * ms, 10 * ms, 4*ms + 2*10*ms + 10*ms},
		{"four lanes", 25, 4, 0, 10 * ms, 2*10*ms/4 + 10*ms},
		{"no lanes counts as one", 13, 0, 3 * ms, 6 * ms, 3*ms + 10*ms + 6*ms},
	}
	for _, c := range cases {
		if got, _, _ := predictFinish(c.queued, 10, c.lanes, c.first, 10*ms, c.own); got != c.want {
			t.Errorf("%s: predictFinish(%d, 10, %d, %v, 10ms, %v) = %v, want %v", c.name, c.queued, c.lanes, c.first, c.own, got, c.want)
		}
	}
}

func TestPredictFinishCountsTheBatchesOnTheLane(t *testing.T) {
	cases := []struct {
		name                string
		queued, lanes       int
		wantJ, wantBatchDel int
	}{
		{"the first batch: the one in flight and its own", 3, 2, 1, 2},
		{"the second start, on the other lane: still two", 10, 2, 2, 2},
		{"the third start comes after one more batch on its lane", 20, 2, 3, 3},
		{"the fourth start", 35, 2, 4, 3},
		{"one lane: every batch ahead is on it", 25, 1, 3, 4},
	}
	for _, c := range cases {
		_, j, batches := predictFinish(c.queued, 10, c.lanes, 5*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond)
		if j != c.wantJ || batches != c.wantBatchDel {
			t.Errorf("%s: batch %d, %d batch delays; want %d, %d", c.name, j, batches, c.wantJ, c.wantBatchDel)
		}
	}
}

func TestCalibrationMarginIsTheQuantileOfTheLatestErrors(t *testing.T) {
	var c calibration
	now := time.Unix(1000, 0)
	if _, ok := c.margin(2, now); ok {
		t.Fatal("a margin with no errors seen")
	}
	// 1..112 µs for the second batch (the margin is recomputed every
	// calEvery errors from calMin, 64, on): the 99.5th percentile of 112
	// is the ⌈111.44⌉th.
	for i := 1; i <= 112; i++ {
		c.observe(2, now, time.Duration(i)*time.Microsecond)
	}
	if m, ok := c.margin(2, now); !ok || m != 112*time.Microsecond {
		t.Errorf("margin %v, %v; want 112µs", m, ok)
	}
	for _, j := range []int{1, 3} {
		if _, ok := c.margin(j, now); ok {
			t.Errorf("batch %d has a margin from the second's errors", j)
		}
	}
	// Stale: nothing seen for calStale, the margin is not trusted.
	if _, ok := c.margin(2, now.Add(calStale)); ok {
		t.Error("a margin trusted calStale after its latest error")
	}
	// The window keeps the latest calWindow: after that many early ones
	// (negative, a pessimistic prediction), the margin is theirs.
	for range calWindow {
		c.observe(2, now, -time.Millisecond)
	}
	if m, _ := c.margin(2, now); m != -time.Millisecond {
		t.Errorf("after %d errors of -1ms, margin %v", calWindow, m)
	}
	// Batches from calStrata on share the deepest stratum.
	for range calMin {
		c.observe(calStrata+5, now, time.Millisecond)
	}
	if m, ok := c.margin(calStrata, now); !ok || m != time.Millisecond {
		t.Errorf("deepest stratum: %v, %v", m, ok)
	}
	if _, ok := c.margin(calStrata-1, now); ok {
		t.Error("the stratum below the deepest took its errors")
	}
	// An error after calStale without any starts the stratum afresh: the
	// old margin does not come back with it.
	later := now.Add(calStale)
	c.observe(2, later, 0)
	if m, ok := c.margin(2, later); ok {
		t.Errorf("after a quiet spell one error brought back the margin %v", m)
	}
}
