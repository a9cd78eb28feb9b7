package dispatch

import (
	"testing"
	"time"
)

func TestPredictFinish(t *testing.T) {
	ms := time.Millisecond
	// A full batch of 10 takes 10ms; the query's own, when smaller, 6ms.
	cases := []struct {
		name          string
		queued, lanes int
		paced         bool
		own, want     time.Duration
	}{
		{"first batch, two paced lanes: half a batch's wait, then its own", 3, 2, true, 6 * ms, 5*ms + 6*ms},
		{"first batch, unpaced: a whole batch's wait", 3, 2, false, 6 * ms, 10*ms + 6*ms},
		{"the 10th query ahead still fits the first batch", 9, 2, true, 10 * ms, 5*ms + 10*ms},
		{"the 11th rides the second start, half a batch later", 10, 2, true, 10 * ms, 5*ms + 5*ms + 10*ms},
		{"the fourth start over two lanes", 35, 2, true, 10 * ms, 5*ms + 3*5*ms + 10*ms},
		{"one lane: batches back to back", 25, 1, true, 10 * ms, 10*ms + 2*10*ms + 10*ms},
		{"four unpaced lanes", 25, 4, false, 10 * ms, 10*ms + 2*10*ms/4 + 10*ms},
		{"no lanes counts as one", 3, 0, true, 6 * ms, 10*ms + 6*ms},
	}
	for _, c := range cases {
		if got := predictFinish(c.queued, 10, c.lanes, c.paced, 10*ms, c.own, 0); got != c.want {
			t.Errorf("%s: predictFinish(%d, 10, %d, %v, 10ms, %v) = %v, want %v", c.name, c.queued, c.lanes, c.paced, c.own, got, c.want)
		}
	}
}

func TestPredictFinishChargesTheTailPerBatchOnTheLane(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name          string
		queued, lanes int
		tails         time.Duration
	}{
		{"the first batch: the one in flight and its own", 3, 2, 2},
		{"the second start, on the other lane: still two", 10, 2, 2},
		{"the third start comes after one more batch on its lane", 20, 2, 3},
		{"the fourth start", 35, 2, 3},
		{"one lane: every batch ahead is on it", 25, 1, 4},
	}
	for _, c := range cases {
		without := predictFinish(c.queued, 10, c.lanes, true, 10*ms, 10*ms, 0)
		if got := predictFinish(c.queued, 10, c.lanes, true, 10*ms, 10*ms, ms) - without; got != c.tails*ms {
			t.Errorf("%s: the tail adds %v, want %d tails", c.name, got, c.tails)
		}
	}
}
