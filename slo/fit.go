package slo

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/linefit"
	"github.com/sloproxy/sloproxy/internal/quantile"
)

// Fit estimates a batch's latency from its size, latency(n) ≈ a + b·n plus
// a high quantile of the residuals, from the most recent observations (see
// refit for how). The quantile, not the mean, is what a deadline must be
// planned against: a fit of the mean misses half of the time by
// construction.
//
// The most recent are the last window observations, less those more than
// FitSpan older than the latest, but never fewer than fitMin. Held by
// count alone, a spell's slow batches would stay until window newer ones
// pushed them out; and a spell that makes a large makes the latency model
// plan batches of one, so admission sheds what cannot ride them, the
// replicas send few batches, and the spell would last in the fit for
// seconds, with almost every query shed. Aged out by time, it lasts at
// most FitSpan.
//
// Fit is safe for concurrent use.
type Fit struct {
	quantile float64

	mu    sync.Mutex // guards the fields below
	obs   []obs      // ring of the last len(obs) observations
	next  int        // where the next observation goes
	count int        // observations held, up to len(obs)
	dirty bool       // obs changed since a, b and r were computed
	a, b  float64    // seconds, seconds per item
	r     float64    // the residuals' quantile, seconds (≥ 0)
	maxN  int        // the largest batch observed

	res, top []float64 // refit's scratch space: the residuals, and the largest of them
}

type obs struct {
	n       float64
	latency float64       // seconds
	at      time.Duration // when it was observed, since epoch
}

// FitWindow is how many observations a Fit keeps by default.
const FitWindow = 512

// FitSpan is how much older than the latest observation the others a Fit
// holds may be, and fitMin how many of the latest it holds whatever their
// age.
const (
	FitSpan = time.Second
	fitMin  = 32
)

// NewFit returns a Fit over the last window observations (FitWindow if
// window ≤ 0) planning against the given quantile of the residuals (0.99
// if it is outside (0, 1)).
func NewFit(window int, quantile float64) *Fit {
	if window <= 0 {
		window = FitWindow
	}
	if !(quantile > 0 && quantile < 1) {
		quantile = 0.99
	}
	return &Fit{quantile: quantile, obs: make([]obs, window)}
}

// Observe records that a batch of n items took latency.
func (f *Fit) Observe(n int, latency time.Duration) { f.record(n, latency, asIs) }

// ObserveOverrun records that a batch of n items was abandoned after
// atLeast, past its queries' deadlines (dispatch.OverrunObserver): it took
// at least that. Above the fitted line for n the lower bound is recorded
// as the batch's latency. That understates one of the slowest batches, but
// leaving it out would hide them all from the residuals' quantile, which
// they decide. At or below the line (a batch sent with less slack than it
// typically takes) it tells nothing the fit can use, and is dropped. Before
// any observation it is recorded: the lower bound is all there is.
func (f *Fit) ObserveOverrun(n int, atLeast time.Duration) { f.record(n, atLeast, asOverrun) }

// restart forgets every observation and records that a batch of n items
// took latency: the fit starts afresh from it. An observation Observe
// would drop leaves the fit as it was.
func (f *Fit) restart(n int, latency time.Duration) { f.record(n, latency, asFirst) }

// recording is how Fit.record takes an observation: as it is, as an
// overrun's lower bound, or in place of every earlier one.
type recording int

const (
	asIs recording = iota
	asOverrun
	asFirst
)

// record records that a batch of n items took latency, as how says; a
// batch of no items or a negative latency is dropped.
func (f *Fit) record(n int, latency time.Duration, how recording) {
	if n <= 0 || latency < 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch how {
	case asOverrun:
		if f.refit(); f.count > 0 && latency.Seconds() <= f.a+f.b*float64(n) {
			return
		}
	case asFirst:
		f.reset()
	}
	f.add(n, latency)
}

// reset forgets every observation; called with mu held, and followed by
// add, which marks the fit for refitting.
func (f *Fit) reset() { f.next, f.count, f.maxN = 0, 0, 0 }

// add records an observation; called with mu held.
func (f *Fit) add(n int, latency time.Duration) {
	f.obs[f.next] = obs{n: float64(n), latency: latency.Seconds(), at: time.Since(epoch)}
	f.next = (f.next + 1) % len(f.obs)
	f.count = min(f.count+1, len(f.obs))
	f.maxN = max(f.maxN, n)
	f.dirty = true
}

// Estimate is what a batch of n items takes: typically (the fit, a + b·n)
// and at the quantile, typical plus tail (the residuals' quantile). Before
// any observation both are 0.
func (f *Fit) Estimate(n int) (typical, tail time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refit()
	return seconds(f.a + f.b*float64(n)), seconds(f.r)
}

// Largest is the largest batch size, at most limit, whose typical
// latency, a + b·n, fits within budget, and 0 when not even one item
// does. A Fit that has not yet seen two batch sizes cannot tell the cost
// per item: it allows doubling the largest batch seen, so that the sizes
// it needs to learn come.
func (f *Fit) Largest(budget time.Duration, limit int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refit()
	if f.count == 0 {
		return limit
	}
	left := budget.Seconds() - f.a
	switch {
	case left < f.b:
		return 0
	case f.b <= 0:
		return min(limit, max(1, 2*f.maxN))
	}
	return int(min(float64(limit), math.Floor(left/f.b)))
}

// Plan is the steady-state batch size for an objective slo when batch
// starts are staggered over lanes (1: not staggered; see Governor.Hold):
// the largest n, at most limit, for which a query that waits for the next
// start and then rides its own batch typically finishes within slo. The next start is when the lane that started earliest ends its
// batch, of at most n. The pacer spaces the starts a 1/lanes share of
// typical apart (while the queue does not fill the batch), its moving
// average of the version's service times. That lane therefore started
// (1 − 1/lanes) of a typical batch before a query that arrived just after
// the latest start:
//
//	2·(a + b·n) − (1 − 1/lanes)·min(typical, a + b·n) ≤ slo.
//
// Where the batches are as large as the plan, typical is a + b·n and this
// is (1 + 1/lanes)·(a + b·n) ≤ slo. Where they are smaller (a load below
// the top rate, whose bursts still fill a batch to n) the batch in flight
// may be larger than the spacing allowed for, and the plan is smaller:
// planning as if every batch were typical would send bursts' batches that
// the queries behind them cannot wait out. As the load rises the batches
// grow, and the plan with them, up to the first form. The tail is not
// charged here: it is admission's to plan for, by refusing what would
// miss (see Governor.Admit). Charged here too, it would collapse a
// replica to batches of one under overload, when a busy processor
// stretches every batch: a and r grow, the planned size falls to one,
// throughput falls with it, and the overload deepens. With no n fitting
// it returns 1; before any observation, limit.
func (f *Fit) Plan(slo time.Duration, lanes int, typical time.Duration, limit int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refit()
	if f.count == 0 {
		return limit
	}
	left := steadyLongest(slo.Seconds(), lanes, typical.Seconds()) - f.a
	switch {
	case left < f.b:
		return 1
	case f.b <= 0:
		return min(limit, max(1, 2*f.maxN))
	}
	return int(min(float64(limit), math.Floor(left/f.b)))
}

// steadyLongest is the longest a batch may take, in seconds, for a query
// that waits for the next of starts staggered over lanes and then rides
// its own batch to finish within slo, where typical is the typical
// batch's latency (see Plan): the largest T with
// 2T − (1 − 1/lanes)·min(typical, T) ≤ slo. Over one lane it is slo/2.
func steadyLongest(slo float64, lanes int, typical float64) float64 {
	l := float64(max(1, lanes))
	return min(slo*l/(l+1), (slo+(1-1/l)*typical)/2)
}

// Params returns the fitted a and b and the residuals' quantile.
func (f *Fit) Params() (a, b, r time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refit()
	return seconds(f.a), seconds(f.b), seconds(f.r)
}

// refit recomputes a, b and r when observations changed. Called with mu
// held.
//
// a and b are fitted by least squares to every batch held (see Fit), and r
// is the quantile of the batches' excess over that line. Delays that strike
// batches whatever their size (the processor shared with other work, a
// timer that wakes late, a collector's pause) move a and r, not b.
//
// b, the cost per item, is taken from every observation in the ring
// instead, whatever its age, when that estimate's standard error is the
// smaller: when the batches held span too few sizes to tell it. Under
// overload admission sheds what a short queue cannot hold, the batches
// shrink to one or two, and a line through batches of one and two is
// their noise: b of several milliseconds, where it is a fraction of one.
// Admission, extrapolating that b to the queue's batches, would shed
// nearly everything, and keep the batches small for as long as it did. a
// is then the mean latency held less b times the mean size, and r the
// quantile of the held batches' excess over that line.
func (f *Fit) refit() {
	if !f.dirty {
		return
	}
	f.dirty = false
	held := f.held()
	span := fitLine(held)
	f.b = span.B
	if len(held[0])+len(held[1]) < f.count {
		if all := fitLine(f.runs(f.count)); all.SE < span.SE {
			f.b = all.B
		}
	}
	f.a = max(0, span.MeanY-f.b*span.MeanX)
	res := f.res[:0]
	for _, run := range held {
		for _, o := range run {
			res = append(res, o.latency-(f.a+f.b*o.n))
		}
	}
	f.res = res
	var r float64
	r, f.top = quantile.High(res, f.quantile, f.top)
	f.r = max(0, r)
}

// fitLine fits a line to the observations in runs, at least one: latency
// against size.
func fitLine(runs [2][]obs) linefit.Line {
	var s linefit.Sums
	for _, run := range runs {
		for _, o := range run {
			s.Add(o.n, o.latency)
		}
	}
	return s.Line()
}

var _ dispatch.OverrunObserver = (*Fit)(nil)

// held is the observations the fit holds (see Fit), oldest first, in the
// ring's two runs (the first empty when they do not wrap). Called with mu
// held and count > 0.
func (f *Fit) held() [2][]obs {
	w := len(f.obs)
	oldest := (f.next - f.count + w) % w
	latest := f.obs[(f.next-1+w)%w].at
	// Stamped as they are added, under mu and on the monotonic clock, the
	// observations' times rise along the ring from the oldest.
	return f.runs(f.count - sort.Search(f.count-fitMin, func(i int) bool {
		return latest-f.obs[(oldest+i)%w].at <= FitSpan
	}))
}

// runs is the latest k observations, oldest first, in the ring's two runs
// (the first empty when they do not wrap). Called with mu held.
func (f *Fit) runs(k int) [2][]obs {
	w := len(f.obs)
	if from := f.next - k; from >= 0 {
		return [2][]obs{nil, f.obs[from:f.next]}
	}
	return [2][]obs{f.obs[f.next-k+w:], f.obs[:f.next]}
}

// epoch is what observations are stamped against: time.Since reads the
// monotonic clock, which neither steps nor slews.
var epoch = time.Now()

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Capacity is the queries a second one replica serves within slo, as the
// fit sees it: with batches of the largest n, at most limit, that keeps
// two batches inside the objective, 2·(a + b·n) ≤ slo (a query that
// arrives just after a batch left waits for it, then rides its own),
// served back to back, n / (a + b·n). It is 0 when the fit has seen no
// batch or not even a batch of one fits. A fit that has not yet seen two
// batch sizes (b = 0) counts batches of limit.
func (f *Fit) Capacity(slo time.Duration, limit int) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refit()
	if f.count == 0 || limit < 1 {
		return 0
	}
	left := slo.Seconds()/2 - f.a
	n := float64(limit)
	if f.b > 0 {
		// The small excess keeps a quotient that rounding left a hair
		// below a whole number from losing that batch size.
		n = min(n, math.Floor(left/f.b*(1+1e-9)))
	}
	if n < 1 || left <= 0 || f.a+f.b*n <= 0 {
		return 0
	}
	return n / (f.a + f.b*n)
}
