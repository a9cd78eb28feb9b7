package slo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestFitLearnsTheCostModelOnItsQuantile(t *testing.T) {
	// latency(n) = 5ms + 0.25ms·n plus a uniform jitter in [0, 1ms):
	// the fit must find a and b and plan against the jitter's p99.
	rng := rand.New(rand.NewPCG(1, 2))
	f := NewFit(0, 0.99)
	for range 2000 {
		n := 1 + rng.IntN(64)
		jitter := time.Duration(rng.Int64N(int64(time.Millisecond)))
		f.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond+jitter)
	}
	a, b, r := f.Params()
	t.Logf("a=%v b=%v r=%v", a, b, r)
	if a < 5*time.Millisecond || a > 6*time.Millisecond {
		t.Errorf("a = %v, want 5ms plus about half the jitter", a)
	}
	if b < 240*time.Microsecond || b > 260*time.Microsecond {
		t.Errorf("b = %v, want 250µs", b)
	}
	// The planned latency covers 99% of batches: a + b·n + r ≥ 5ms +
	// 0.25ms·n + 0.99ms, within a small error.
	typical, tail := f.Estimate(20)
	if est, floor := typical+tail, 10*time.Millisecond+900*time.Microsecond; est < floor || est > 11200*time.Microsecond {
		t.Errorf("Estimate(20) = %v + %v, want about 11ms in all", typical, tail)
	}
}

func TestFitLargest(t *testing.T) {
	f := NewFit(0, 0.99)
	if got := f.Largest(time.Millisecond, 64); got != 64 {
		t.Fatalf("with no observations Largest = %d, want the limit", got)
	}
	f.Observe(4, 6*time.Millisecond)
	if got := f.Largest(time.Second, 64); got != 8 {
		t.Fatalf("with one batch size seen Largest = %d, want double it (8)", got)
	}
	for n := 1; n <= 40; n++ {
		f.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond)
	}
	tests := []struct {
		budget time.Duration
		limit  int
		want   int
	}{
		{10 * time.Millisecond, 64, 20},
		{20 * time.Millisecond, 64, 60},
		{20 * time.Millisecond, 32, 32},
		{5 * time.Millisecond, 64, 0}, // the fixed cost alone
		{4 * time.Millisecond, 64, 0},
	}
	for _, tc := range tests {
		if got := f.Largest(tc.budget, tc.limit); got < tc.want-1 || got > tc.want {
			t.Errorf("Largest(%v, %d) = %d, want %d", tc.budget, tc.limit, got, tc.want)
		}
	}
}

func TestLatencyModelPlansTheSteadyStateAndRefusesDoomedHeads(t *testing.T) {
	// Batches of every size from 1 to 40 at 5ms + 0.25ms·n, each seen
	// once on time and once 2ms late: the fit is the line between,
	// 6ms + 0.25ms·n, with a tail of 1ms.
	c := NewLatencyModel(0.99, 0, 64)
	for n := 1; n <= 40; n++ {
		c.Observe(n, 5*time.Millisecond+time.Duration(n)*250*time.Microsecond)
		c.Observe(n, 7*time.Millisecond+time.Duration(n)*250*time.Microsecond)
	}
	const ms = time.Millisecond
	tests := []struct {
		name       string
		lanes      int
		slack, slo time.Duration
		want       int
	}{
		{"no deadline in sight: the cap", 1, -1, -1, 64},
		{"the steady-state size, 2·(6ms + 0.25ms·n) ≤ 20ms", 1, 20 * ms, 20 * ms, 16},
		{"a looser SLO allows more, up to the cap", 1, 20 * ms, 80 * ms, 64},
		{"an older head is still sent in a full batch", 1, 7 * ms, 20 * ms, 16},
		{"a head that cannot typically make it even alone: refused", 1, 6 * ms, 20 * ms, 0},
		// The typical batch the pacer spaces the starts by, here the
		// batches' mean latency 6ms + 0.25ms·20.5 = 11.125ms, is below the
		// plan's: 2·T − (1 − 1/lanes)·11.125ms ≤ 20ms.
		{"starts staggered over two lanes: 2·T − 0.5·11.125ms ≤ 20ms", 2, 20 * ms, 20 * ms, 27},
		{"over four lanes: 2·T − 0.75·11.125ms ≤ 20ms", 4, 20 * ms, 20 * ms, 32},
		{"lanes 0 is one lane", 0, 20 * ms, 20 * ms, 16},
	}
	const typical = 6*ms + 20500*time.Microsecond/4
	for _, tc := range tests {
		c.SetLanes(tc.lanes, typical)
		if got := c.BatchSize(tc.slack, tc.slo); got < tc.want-1 || got > tc.want {
			t.Errorf("%s: BatchSize(%v, %v) = %d, want %d", tc.name, tc.slack, tc.slo, got, tc.want)
		}
	}
}

func TestPlanFollowsTheTypicalBatch(t *testing.T) {
	// Every batch takes exactly 6ms + 0.25ms·n. A query waits for the lane
	// that started earliest to end its batch of up to n, a 1 − 1/lanes
	// share of a typical batch after it started, and then rides its own:
	// 2·T(n) − (1 − 1/lanes)·min(typical, T(n)) ≤ slo.
	const ms = time.Millisecond
	tests := []struct {
		name     string
		from, to int // the sizes of the batches observed, once each
		lanes    int
		slo      time.Duration
		want     int
	}{
		{"batches as large as the plan: 1.5·T(n) ≤ 20ms", 27, 33, 2, 20 * ms, 29},
		{"small batches (typical 7.25ms): 2·T(n) − 0.5·7.25ms ≤ 20ms", 1, 9, 2, 20 * ms, 23},
		{"over four lanes: 2·T(n) − 0.75·7.25ms ≤ 20ms", 1, 9, 4, 20 * ms, 26},
		{"over four lanes, large batches: 1.25·T(n) ≤ 20ms", 35, 45, 4, 20 * ms, 40},
		{"one lane: 2·T(n) ≤ 20ms whatever the batches", 1, 9, 1, 20 * ms, 16},
		{"one lane, large batches", 27, 33, 1, 20 * ms, 16},
		{"not even one item fits: 1", 1, 9, 2, 8 * ms, 1},
	}
	for _, tc := range tests {
		f := NewFit(0, 0.99)
		for n := tc.from; n <= tc.to; n++ {
			f.Observe(n, 6*ms+time.Duration(n)*250*time.Microsecond)
		}
		// The pacer's average of these batches: their mean.
		typical := 6*ms + time.Duration(tc.from+tc.to)*125*time.Microsecond
		if got := f.Plan(tc.slo, tc.lanes, typical, 64); got < tc.want-1 || got > tc.want {
			t.Errorf("%s: Plan(%v, %d) = %d, want %d", tc.name, tc.slo, tc.lanes, got, tc.want)
		}
	}
}

func TestLatencyModelProbesAfterRefusingForAWholeSLO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ms = time.Millisecond
		// A spell taught the fit that every batch takes 30ms or more,
		// past a 20ms SLO: every head is doomed by its reckoning.
		c := NewLatencyModel(0.99, 0, 64)
		for n := 1; n <= 40; n++ {
			c.Observe(n, 30*ms+time.Duration(n)*250*time.Microsecond)
		}
		head := func() int { return c.BatchSize(19*ms, 20*ms) }
		steps := []struct {
			name    string
			sleep   time.Duration // first
			observe time.Duration // then a batch of one observed, if positive
			sent    bool          // then whether a head with 19ms left is sent
		}{
			{"fresh from the spell: refused", 0, 0, false},
			{"an SLO without a batch: a probe", 20 * ms, 0, true},
			{"the probe not answered: none other within its SLO", 10 * ms, 0, false},
			{"nor just before its end", 10*ms - 1, 0, false},
			{"an SLO after the probe: the next", 1, 0, true},
			{"that one answered in 5.5ms: the fit starts afresh from it", 0, 5500 * time.Microsecond, true},
			{"a batch of 30ms: the fit's a 17.75ms, still sent", 0, 30 * ms, true},
			{"another: a 21.8ms, refused while batches are observed", 0, 30 * ms, false},
			{"an SLO later a probe", 20 * ms, 0, true},
			{"answered in 30ms, it starts the fit afresh at 30ms", 0, 30 * ms, false},
		}
		for _, st := range steps {
			time.Sleep(st.sleep)
			if st.observe > 0 {
				c.Observe(1, st.observe)
			}
			if st.observe == 5500*time.Microsecond {
				if a, _, _ := c.fit.Params(); a != st.observe {
					t.Fatalf("%s: the fit's a = %v, want the probe's alone", st.name, a)
				}
			}
			if got := head(); (got > 0) != st.sent {
				t.Fatalf("%s: BatchSize = %d, want the head sent: %v", st.name, got, st.sent)
			}
		}
		if got := c.BatchSize(0, 0); got != 0 {
			t.Errorf("a head whose deadline is its arrival: BatchSize = %d, want 0, probe or not", got)
		}
	})
}

func TestAIMD(t *testing.T) {
	c := &AIMD{}
	const slo = 20 * time.Millisecond
	cost := func(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*250*time.Microsecond }
	// Full batches inside the 10ms budget grow the size by one each.
	for range 30 {
		n := c.BatchSize(slo, slo)
		c.Observe(n, cost(n))
	}
	n := c.BatchSize(slo, slo)
	if n < 18 || n > 22 {
		t.Fatalf("after 30 full batches the size is %d, want it near the budget's 20", n)
	}
	// A batch past the budget shrinks it by a tenth (of a size that may
	// have a fraction).
	c.Observe(n, 11*time.Millisecond)
	if got, want := c.BatchSize(slo, slo), float64(n)*0.9; float64(got) < want-1 || float64(got) > want+0.9 {
		t.Fatalf("after a miss the size is %d, want %.1f", got, want)
	}
	// Batches smaller than the size do not grow it.
	before := c.BatchSize(slo, slo)
	for range 10 {
		c.Observe(1, cost(1))
	}
	if got := c.BatchSize(slo, slo); got != before {
		t.Fatalf("small batches moved the size from %d to %d", before, got)
	}
}

// TestAIMDBudgetFollowsTheLanes runs full batches of a 5ms + 0.25ms·n
// cost model with a 20ms SLO through AIMD over staggered lanes, the test
// keeping the pacer's moving average of the batches (weight 1/8) as the
// typical batch. The budget is bounded by lanes/(lanes+1) of the SLO
// (Fit.Plan's steady state, for batches as long as the budget), and the
// size saws below the largest n whose batch fits that bound. The moving
// average of a sawtooth stays below its top, so the budget stays under the
// bound and the climb stops a size or two short of that n; it never passes
// it by more than the one size tried. Each miss takes a tenth off the size
// tried.
func TestAIMDBudgetFollowsTheLanes(t *testing.T) {
	const slo = 20 * time.Millisecond
	cost := func(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*250*time.Microsecond }
	for _, tc := range []struct {
		lanes   int
		top     int // the largest n with cost(n) within the bound
		boundMS float64
	}{
		{lanes: 1, top: 20, boundMS: 10},
		{lanes: 2, top: 33, boundMS: 40.0 / 3},
		{lanes: 4, top: 44, boundMS: 16},
	} {
		t.Run(fmt.Sprint(tc.lanes, " lanes"), func(t *testing.T) {
			c := &AIMD{}
			var typical time.Duration
			lo, hi := tc.top, 0
			for i := range 400 {
				c.SetLanes(tc.lanes, typical)
				n := c.BatchSize(slo, slo)
				if i >= 200 {
					lo, hi = min(lo, n), max(hi, n)
				}
				c.Observe(n, cost(n))
				if typical == 0 {
					typical = cost(n)
				} else {
					typical += (cost(n) - typical) / 8
				}
			}
			if hi < tc.top-2 || hi > tc.top+1 {
				t.Errorf("the size rose to %d, want %d to %d: the bound of %.2fms fits %d", hi, tc.top-2, tc.top+1, tc.boundMS, tc.top)
			}
			if floor := int(0.9*float64(hi)) - 1; lo < floor {
				t.Errorf("the size fell to %d, more than a tenth under its top %d", lo, hi)
			}
		})
	}
	// The budget follows the typical batch, not only the lanes: batches of
	// a millisecond over two lanes keep it near half the SLO (10.25ms), so
	// a batch of 11ms is a miss that a budget of 2/3 of the SLO would pass.
	t.Run("short typical batch", func(t *testing.T) {
		c := &AIMD{}
		c.SetLanes(2, time.Millisecond)
		for range 5 {
			n := c.BatchSize(slo, slo)
			c.Observe(n, time.Millisecond)
		}
		before := c.BatchSize(slo, slo)
		c.Observe(before, 11*time.Millisecond)
		if after := c.BatchSize(slo, slo); after >= before {
			t.Fatalf("a batch of 11ms after batches of 1ms moved the size from %d to %d; want it shrunk", before, after)
		}
	})
}

func TestBurnRate(t *testing.T) {
	tests := []struct{ attainment, objective, want float64 }{
		{1, 0.99, 0},
		{0.99, 0.99, 1},
		{0.95, 0.99, 5},
		{0.5, 0.9, 5},
	}
	for _, tc := range tests {
		if got := BurnRate(tc.attainment, tc.objective); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("BurnRate(%v, %v) = %v, want %v", tc.attainment, tc.objective, got, tc.want)
		}
	}
}

func TestReserve(t *testing.T) {
	tests := []struct {
		priority int
		want     time.Duration
	}{{2, 0}, {0, 0}, {-1, 20 * time.Millisecond}, {-2, 40 * time.Millisecond}, {-9, 80 * time.Millisecond}}
	for _, tc := range tests {
		if got := Reserve(100*time.Millisecond, tc.priority); got != tc.want {
			t.Errorf("Reserve(100ms, %d) = %v, want %v", tc.priority, got, tc.want)
		}
	}
}

func TestTable(t *testing.T) {
	tab := NewTable(map[string]Policy{"a": {Shed: ShedReject}})
	if tab.Get("a").Shed != ShedReject || tab.Get("b") != DefaultPolicy {
		t.Fatal("Get does not return the set policy, or the default for others")
	}
	tab.Set(nil)
	if tab.Get("a") != DefaultPolicy {
		t.Fatal("Set did not replace the policies")
	}
}

// TestFitTailIsTheQuantile checks the fit's tail, found by keeping the
// largest residuals, against sorting all of them.
func TestFitTailIsTheQuantile(t *testing.T) {
	for _, tc := range []struct {
		quantile float64
		count    int
	}{{0.99, 512}, {0.99, 40}, {0.9, 300}, {0.6, 512}, {0.99, 1}} {
		rng := rand.New(rand.NewPCG(1, uint64(tc.count)))
		f := NewFit(0, tc.quantile)
		var lat []time.Duration
		var ns []int
		for range tc.count {
			n := 1 + rng.IntN(32)
			l := 2*time.Millisecond + time.Duration(n)*100*time.Microsecond + time.Duration(rng.IntN(3000))*time.Microsecond
			f.Observe(n, l)
			ns, lat = append(ns, n), append(lat, l)
		}
		a, b, r := f.Params()
		res := make([]float64, len(lat))
		for i := range lat {
			res[i] = (lat[i] - a - b*time.Duration(ns[i])).Seconds()
		}
		slices.Sort(res)
		want := max(0, res[min(len(res)-1, int(math.Ceil(tc.quantile*float64(len(res))))-1)])
		if d := r.Seconds() - want; d > 1e-7 || d < -1e-7 {
			t.Errorf("quantile %v of %d: tail %v, want %v", tc.quantile, tc.count, r, want)
		}
	}
}

// TestOverrunsTeachWhatTheyBound tells AIMD and the latency model of
// batches of 10 abandoned past their deadlines (dispatch.OverrunObserver),
// after a spell of batches that took exactly the cost model: what each
// lower bound teaches depends on what it exceeds.
func TestOverrunsTeachWhatTheyBound(t *testing.T) {
	cost := func(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*250*time.Microsecond }
	const slo = 20 * time.Millisecond // AIMD's budget is 10ms; a batch of 10 typically takes 7.5ms
	for _, tc := range []struct {
		name        string
		atLeast     time.Duration
		aimdShrinks bool // past the budget
		fitLearns   bool // past the fitted line
	}{
		{"past the budget and the line", 30 * time.Millisecond, true, true},
		{"past the line, within the budget", 9 * time.Millisecond, false, true},
		{"within the line", 5 * time.Millisecond, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &AIMD{}
			for range 15 {
				n := a.BatchSize(slo, slo)
				a.Observe(n, cost(n))
			}
			before := a.BatchSize(slo, slo)
			a.ObserveOverrun(10, tc.atLeast)
			if after := a.BatchSize(slo, slo); (after < before) != tc.aimdShrinks || after > before {
				t.Errorf("AIMD's size went from %d to %d; shrink: %v", before, after, tc.aimdShrinks)
			}

			c := NewLatencyModel(0.99, 0, 0)
			for i := range 500 {
				n := 1 + i%32
				c.Observe(n, cost(n))
			}
			// Ten overruns of 512 batches are above the fit's 99th percentile.
			for range 10 {
				c.ObserveOverrun(10, tc.atLeast)
			}
			_, tail := c.fit.Estimate(10)
			if learned := tail > 0; learned != tc.fitLearns {
				t.Errorf("the fit's tail is %v after ten overruns of %v; learned: %v", tail, tc.atLeast, tc.fitLearns)
			}
		})
	}
	// Before any batch, a lower bound is all the fit has.
	f := NewFit(0, 0.99)
	f.ObserveOverrun(10, 30*time.Millisecond)
	if typical, _ := f.Estimate(10); typical != 30*time.Millisecond {
		t.Errorf("a fit told only of an overrun of 30ms estimates %v", typical)
	}
}

// TestFitHoldsTheLatestSpan drives a Fit with a fake clock: a spell of
// slow batches is forgotten once it is more than FitSpan older than the
// latest batch, but the latest fitMin are held however old.
func TestFitHoldsTheLatestSpan(t *testing.T) {
	cost := func(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*250*time.Microsecond }
	near := func(got, want time.Duration) bool {
		return got-want < 10*time.Microsecond && want-got < 10*time.Microsecond
	}
	synctest.Test(t, func(t *testing.T) {
		f := NewFit(0, 0.99)
		// A spell: 200 batches of 30ms over half a second.
		for i := range 200 {
			f.Observe(1+i%32, 30*time.Millisecond)
			time.Sleep(2500 * time.Microsecond)
		}
		// Then the cost model's batches, 100 over 0.4 s: the spell is
		// within FitSpan of them, and held.
		model := func() {
			for i := range 100 {
				n := 1 + i%32
				f.Observe(n, cost(n))
				time.Sleep(4 * time.Millisecond)
			}
		}
		model()
		if a, _, _ := f.Params(); a < 10*time.Millisecond {
			t.Fatalf("a = %v with the spell half a second before the latest batch; want it held", a)
		}
		// A second later the spell is more than FitSpan older than the
		// latest batch.
		time.Sleep(FitSpan)
		model()
		if a, b, r := f.Params(); !near(a, 5*time.Millisecond) || !near(b, 250*time.Microsecond) || r > 10*time.Microsecond {
			t.Fatalf("a = %v, b = %v, tail %v after the spell aged out; want the cost model's 5ms, 250µs, 0", a, b, r)
		}
		// After ten idle seconds, one slow batch: the fit holds it with
		// the latest fitMin-1 before it, however old.
		time.Sleep(10 * time.Second)
		f.Observe(8, 30*time.Millisecond)
		typical, _ := f.Estimate(8)
		if want := (cost(8)*(fitMin-1) + 30*time.Millisecond) / fitMin; typical < cost(8) || typical > 2*want {
			t.Fatalf("a batch of 8 estimated at %v after one of 30ms; want about %v, the mean of the latest %d", typical, want, fitMin)
		}
	})
}

// TestFitKeepsTheCostPerItemThroughBatchesOfOneAndTwo: when the batches
// of the latest FitSpan are all of one or two (admission shedding under
// overload), a line through them is their noise, here a slope of 4ms an
// item; the cost per item comes from the older, wider batches the ring
// still holds (mixed with the latest, which pull it down), and a and the
// tail follow the latest.
func TestFitKeepsTheCostPerItemThroughBatchesOfOneAndTwo(t *testing.T) {
	cost := func(n int) time.Duration { return 5*time.Millisecond + time.Duration(n)*250*time.Microsecond }
	synctest.Test(t, func(t *testing.T) {
		f := NewFit(0, 0.99)
		for i := range 300 {
			n := 1 + i%32
			f.Observe(n, cost(n))
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(FitSpan)
		for i := range 150 {
			jitter := time.Duration(i%2) * time.Millisecond
			f.Observe(1, cost(1)+time.Millisecond+jitter)
			f.Observe(2, cost(2)+5*time.Millisecond+jitter)
			time.Sleep(5 * time.Millisecond)
		}
		a, b, r := f.Params()
		t.Logf("a = %v, b = %v, tail %v", a, b, r)
		if b < 50*time.Microsecond || b > time.Millisecond {
			t.Errorf("b = %v from batches of one and two; want near the wider batches' 250µs, far from their own 4ms", b)
		}
		if typical, _ := f.Estimate(2); typical < cost(2)+2*time.Millisecond || typical > cost(2)+5*time.Millisecond {
			t.Errorf("a batch of two estimated at %v; want the latest batches' level, %v to %v", typical, cost(2)+2*time.Millisecond, cost(2)+5*time.Millisecond)
		}
	})
}

func TestFitCapacity(t *testing.T) {
	f := NewFit(0, 0.99)
	if got := f.Capacity(80*time.Millisecond, 64); got != 0 {
		t.Fatalf("with no observations Capacity = %v, want 0 (unknown)", got)
	}
	for n := 1; n <= 40; n++ {
		f.Observe(n, 20*time.Millisecond+time.Duration(n)*time.Millisecond)
	}
	tests := []struct {
		slo   time.Duration
		limit int
		want  float64 // queries a second
	}{
		{80 * time.Millisecond, 64, 500},           // n = 20: 20 / 40 ms, the bound
		{80 * time.Millisecond, 10, 10.0 / 0.030},  // the batch cap
		{120 * time.Millisecond, 64, 40.0 / 0.060}, // n = 40
		{40 * time.Millisecond, 64, 0},             // not even a batch of one keeps two within it
		{42 * time.Millisecond, 64, 1.0 / 0.021},   // a batch of one
	}
	for _, tc := range tests {
		if got := f.Capacity(tc.slo, tc.limit); math.Abs(got-tc.want) > tc.want*0.01 {
			t.Errorf("Capacity(%v, %d) = %.1f/s, want %.1f/s", tc.slo, tc.limit, got, tc.want)
		}
	}
}
