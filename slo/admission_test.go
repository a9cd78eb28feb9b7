package slo

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
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
	// calEvery errors, and trusted from calMin, 64, on): the 99.5th
	// percentile of 112 is the ⌈111.44⌉th.
	for i := 1; i <= 112; i++ {
		c.observe(2, now, time.Duration(i)*time.Microsecond, false)
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
	// (negative, a pessimistic prediction), the margin is theirs, once
	// recomputed (a read calRefresh after the last computation).
	for range calWindow {
		c.observe(2, now, -time.Millisecond, false)
	}
	if m, _ := c.margin(2, now.Add(calRefresh)); m != -time.Millisecond {
		t.Errorf("after %d errors of -1ms, margin %v", calWindow, m)
	}
	// Batches from calStrata on share the deepest stratum.
	for range calMin {
		c.observe(calStrata+5, now, time.Millisecond, false)
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
	c.observe(2, later, 0, false)
	if m, ok := c.margin(2, later); ok {
		t.Errorf("after a quiet spell one error brought back the margin %v", m)
	}
}

func TestCalibrationForgetsASpellByTime(t *testing.T) {
	// A spell: queries of the first batch finish 10ms after their
	// prediction; from calQuiet/2 later to calStale after it others finish
	// 1µs, 2µs, ... k µs after it, evenly spread, so that none of the
	// gaps between them is calQuiet. k < 200, so the 99.5th percentile of
	// the k is their largest, and of the k with one of the spell's, the
	// spell's.
	cases := []struct {
		name         string
		spell, fresh int
	}{
		{"the ring not yet full", 3, calMin},
		{"the ring wrapped", 250, 70},
	}
	for _, tc := range cases {
		var c calibration
		t0 := time.Unix(1000, 0)
		for range tc.spell {
			c.observe(1, t0, 10*time.Millisecond, false)
		}
		from, every := t0.Add(calQuiet/2), (calStale-calQuiet/2)/time.Duration(tc.fresh-1)
		for i := 1; i <= tc.fresh; i++ {
			c.observe(1, from.Add(time.Duration(i-1)*every), time.Duration(i)*time.Microsecond, false)
		}
		if m, ok := c.margin(1, t0.Add(calStale-time.Millisecond)); !ok || m != 10*time.Millisecond {
			t.Errorf("%s, within calStale of the spell: margin %v, %v; want the spell's 10ms", tc.name, m, ok)
		}
		// Once the spell is calStale old none of its errors counts, though
		// fewer than calWindow came after them.
		want := time.Duration(tc.fresh) * time.Microsecond
		if m, ok := c.margin(1, t0.Add(calStale+calRefresh)); !ok || m != want {
			t.Errorf("%s, calStale after the spell: margin %v, %v; want %v from the errors since", tc.name, m, ok, want)
		}
		// And once those are calStale old too, none is left to trust.
		if m, ok := c.margin(1, t0.Add(2*calStale)); ok {
			t.Errorf("%s, every error calStale old: margin %v still trusted", tc.name, m)
		}
	}
}

// TestCalibrationForgetsWhatCameBeforeAGap: a stall's errors set the
// margin; once the stratum has shed with none of its queries finishing
// for calQuiet it is not trusted, and the queries let in after that gap
// set it afresh, though the stall's errors are under calStale old. A
// stratum that shed nothing keeps them.
func TestCalibrationForgetsWhatCameBeforeAGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	stall := func() *calibration {
		c := new(calibration)
		for range 100 {
			c.observe(1, t0, 15*time.Millisecond, false)
		}
		for i := 1; i <= 100; i++ {
			c.observe(1, t0, time.Duration(i)*time.Microsecond, false)
		}
		if m, ok := c.margin(1, t0.Add(calRefresh)); !ok || m != 15*time.Millisecond {
			t.Fatalf("during the stall: margin %v, %v; want 15ms", m, ok)
		}
		return c
	}

	c := stall()
	c.shed(1, t0.Add(calRefresh))
	if m, ok := c.margin(1, t0.Add(calQuiet-time.Millisecond)); !ok || m != 15*time.Millisecond {
		t.Errorf("shedding, the latest error under calQuiet old: margin %v, %v; want the stall's", m, ok)
	}
	if m, ok := c.margin(1, t0.Add(calQuiet+calRefresh)); ok {
		t.Errorf("shedding, nothing finished for calQuiet: margin %v still trusted", m)
	}
	after := t0.Add(calQuiet + 2*calRefresh)
	for i := 1; i <= calMin; i++ {
		c.observe(1, after, time.Duration(i)*time.Microsecond, false)
	}
	want := time.Duration(calMin) * time.Microsecond
	if m, ok := c.margin(1, after.Add(calRefresh)); !ok || m != want {
		t.Errorf("after the gap: margin %v, %v; want %v, the largest since", m, ok, want)
	}

	// Nothing shed in the stratum: quiet, but no gap.
	idle := stall()
	idle.shed(2, t0.Add(calRefresh))
	if m, ok := idle.margin(1, t0.Add(calQuiet+calRefresh)); !ok || m != 15*time.Millisecond {
		t.Errorf("idle for calQuiet: margin %v, %v; want the stall's still", m, ok)
	}
}

// TestFinishedStampsTheClock: a query refused as doomed counts with its
// deadline's error, a lower bound, but is stamped when it was refused, so
// that the stratum's latest error is not dated ahead of the clock.
func TestFinishedStampsTheClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := &Governor{est: lineEst{}}
	p := dispatch.Prediction{Arrived: t0, Deadline: t0.Add(300 * time.Millisecond), Finish: 40 * time.Millisecond, Batch: 1}
	g.Finished(p, t0.Add(10*time.Millisecond), true)
	w := &g.cal.strata[0]
	if w.n != 1 || w.errs[0] != 260*time.Millisecond || w.ats[0] != t0.Add(10*time.Millisecond).UnixNano() {
		t.Errorf("held %d: error %v stamped %v; want 260ms stamped at the clock's 10ms", w.n, w.errs[0], time.Unix(0, w.ats[0]).Sub(t0))
	}
	if g.cal.ended != 1 || g.cal.late != 1 {
		t.Errorf("outcomes %d, late %d; want the doomed query counted late", g.cal.ended, g.cal.late)
	}
}

// lineEst is an estimator that knows the model: a batch of n takes 5ms +
// n·0.5ms, with a tail of 1ms.
type lineEst struct{}

func (lineEst) Observe(int, time.Duration)        {}
func (lineEst) ObserveOverrun(int, time.Duration) {}

func (lineEst) Estimate(n int) (time.Duration, time.Duration) {
	return 5*time.Millisecond + time.Duration(n)*time.Millisecond/2, time.Millisecond
}

// sizes is a dispatcher whose replicas all take batches of the same size.
type sizes int

func (s sizes) BatchSize(time.Duration) int { return int(s) }

// TestAdmissionTimesTheNextStartFromTheBatchesInFlight: with batches of
// 10 over two paced lanes (a full batch takes 10ms), a query rides the
// next batch to leave, and whether it makes its budget depends on when
// that is. Uncalibrated, the margin is two tails (the batch in flight on
// its lane and its own). Behind 5 others its own batch takes 8ms, and a
// 12ms budget admits it if the next start is at most 2ms away. The worst
// wait for a start, half a full batch, would shed the admitted case too.
func TestAdmissionTimesTheNextStartFromTheBatchesInFlight(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name      string
		queued    int
		budget    time.Duration
		lastStart time.Duration    // of the latest batch, from t0
		ends      [2]time.Duration // of the two batches in flight, from t0
		admitted  bool
	}{
		{"a batch about to end, the pacing share past", 5, 12 * ms, -4 * ms, [2]time.Duration{500 * time.Microsecond, 6 * ms}, true},
		{"both batches well under way", 5, 12 * ms, -1 * ms, [2]time.Duration{4 * ms, 9 * ms}, false},
		{"a batch about to end, but the pacer holds the lane", 5, 12 * ms, -500 * time.Microsecond, [2]time.Duration{500 * time.Microsecond, 9500 * time.Microsecond}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := &Governor{est: lineEst{}, paced: true}
			// The pacer: a service time of 10ms, and the two batches in
			// flight.
			served(&g.pace, t0, 10*ms)
			g.pace.started(t0.Add(c.lastStart-10*ms), t0.Add(c.ends[1]))
			g.pace.started(t0.Add(c.lastStart), t0.Add(c.ends[0]))
			p, err := g.Admit(dispatch.Arrival{Model: "m:1", Arrived: t0, Deadline: t0.Add(c.budget), Queued: c.queued,
				Replicas: 2, Slots: 1, Sizes: sizes(10)})
			if got := err == nil; got != c.admitted {
				t.Errorf("admitted %v (%v), want %v", got, err, c.admitted)
			}
			if err != nil && !errors.Is(err, dispatch.ErrShed) {
				t.Errorf("refused with %v, not ErrShed", err)
			}
			if err == nil && (p.Batch != 1 || p.Finish != 9*ms) {
				t.Errorf("predicted batch %d, finish %v; want the first, at 9ms", p.Batch, p.Finish)
			}
		})
	}
}

// TestCalibrationRiskFollowsTheLateShare: the margin leaves out more of
// the errors' tail while few of the admitted finish late, and goes back
// to the 99.5th percentile when more than riskTarget of them do.
func TestCalibrationRiskFollowsTheLateShare(t *testing.T) {
	type round struct {
		n, late int
		steps   int
		apart   time.Duration // between steps
	}
	quiet := round{riskOutcomes, 0, 12, riskStep}
	cases := []struct {
		name   string
		rounds []round
		want   float64 // the risk afterwards
	}{
		{"none late: up to riskHigh", []round{quiet}, riskHigh},
		{"then 1% late: back down to riskLow", []round{quiet, {riskOutcomes, 4, 4, riskStep}}, riskLow},
		{"then one step of 1% late: half of riskHigh", []round{quiet, {riskOutcomes, 4, 1, riskStep}}, riskHigh / 2},
		{"then 0.5% late, not above the target nor under half: held", []round{quiet, {riskOutcomes, 2, 3, riskStep}}, riskHigh},
		{"then all late, but one outcome short of a step: held", []round{quiet, {riskOutcomes - 1, riskOutcomes, 1, riskStep}}, riskHigh},
		{"then all late, three rounds within a step: one halving", []round{quiet, {riskOutcomes, riskOutcomes, 3, riskStep / 4}}, riskHigh / 2},
		{"none late, a step's outcomes spread over two: grows every other", []round{{riskOutcomes / 2, 0, 4, riskStep}}, riskLow * 5 / 4 * 5 / 4},
	}
	for _, tc := range cases {
		var c calibration
		at := time.Unix(1000, 0)
		for _, r := range tc.rounds {
			for range r.steps {
				for i := range r.n {
					c.observe(3, at, 0, i < r.late)
				}
				at = at.Add(r.apart)
			}
		}
		if got := 1 - c.quantile(); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: risk %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestCalibrationMarginTakesTheRisk: the margin is the (1 − risk)-
// quantile of the errors, 1..256µs, and a step of the risk has it
// recomputed at once.
func TestCalibrationMarginTakesTheRisk(t *testing.T) {
	var c calibration
	at := time.Unix(1000, 0)
	if m, _ := c.margin(1, at); c.quantile() != 1-riskLow || m != 0 {
		t.Fatalf("a fresh calibration: quantile %v, margin %v", c.quantile(), m)
	}
	// Ten quiet steps: risk 0.005·1.25¹⁰ ≈ 0.0466, the ⌈0.9534·256⌉th.
	for range 10 {
		for range riskOutcomes {
			c.observe(3, at, 0, false)
		}
		at = at.Add(riskStep)
	}
	fill := at.Add(-10 * time.Millisecond) // under riskStep after the last step
	for i := 1; i <= calWindow; i++ {
		c.observe(1, fill, time.Duration(i)*time.Microsecond, false)
	}
	if m, ok := c.margin(1, fill); !ok || m != 245*time.Microsecond {
		t.Errorf("after ten steps: margin %v, %v; want 245µs", m, ok)
	}
	// The eleventh step, 10ms after that margin was computed, takes the
	// risk to riskHigh: the ⌈0.95·256⌉th.
	for range riskOutcomes - calWindow {
		c.observe(3, at, 0, false)
	}
	if m, ok := c.margin(1, at); !ok || m != 244*time.Microsecond {
		t.Errorf("after the eleventh step: margin %v, %v; want 244µs", m, ok)
	}
}
