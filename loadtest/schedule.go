// Package loadtest drives a proxy open-loop: requests leave on a schedule
// of their own, whatever the answers' latency, so that a slow server cannot
// slow the load down and hide its own latency (coordinated omission). It
// is the engine of `sloproxy bench`.
//
// Sending is github.com/tsenart/vegeta/v12's attacker, a well-kept
// open-loop load generator; this package gives it a Schedule (phases of
// constant or Poisson arrivals: a constant rate, a step change, bursts),
// classifies the proxy's answers (model output, default output, shed,
// error, late against the SLO), scrapes the proxy's batch sizes from its
// /metrics, and reports percentiles, SLO attainment, a per-second series,
// a JSON result and a PNG plot.
package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Phase is a stretch of the schedule at one rate.
type Phase struct {
	Duration time.Duration
	Rate     float64 // requests per second
}

// Schedule is when requests leave: its phases one after the other, each
// with constant spacing (1/rate apart) or Poisson arrivals (exponential
// gaps of mean 1/rate, drawn from a fixed seed so runs repeat).
type Schedule struct {
	Phases  []Phase
	Poisson bool
	Seed    uint64

	built    bool
	arrivals []time.Duration // when each request leaves, from the start
}

// ParsePhases reads "30s@300,30s@900,30s@300": DURATION@RATE, comma
// separated.
func ParsePhases(s string) ([]Phase, error) {
	var phases []Phase
	for part := range strings.SplitSeq(s, ",") {
		d, r, ok := strings.Cut(strings.TrimSpace(part), "@")
		if !ok {
			return nil, fmt.Errorf("phase %q: want DURATION@RATE, such as 30s@500", part)
		}
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return nil, fmt.Errorf("phase %q: duration %q: want a positive duration such as 30s", part, d)
		}
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil {
			return nil, fmt.Errorf("phase %q: rate %q: want requests per second, 0 or more", part, r)
		}
		p := Phase{Duration: dur, Rate: rate}
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("phase %q: %w", part, err)
		}
		phases = append(phases, p)
	}
	if len(phases) == 0 {
		return nil, fmt.Errorf("no phases")
	}
	return phases, nil
}

// check refuses a phase that is not a bounded load.
func (p Phase) check() error {
	switch {
	case p.Duration <= 0:
		return fmt.Errorf("duration %v: must be positive", p.Duration)
	case !(p.Rate >= 0) || math.IsInf(p.Rate, 0): // NaN fails >= 0
		return fmt.Errorf("rate %v: want requests per second, 0 or more", p.Rate)
	case p.Rate*p.Duration.Seconds() > maxRequests:
		return fmt.Errorf("%v at %v/s is more than %d requests", p.Duration, p.Rate, maxRequests)
	}
	return nil
}

// Validate refuses a schedule that is empty or not a bounded load.
func (s *Schedule) Validate() error {
	if len(s.Phases) == 0 {
		return fmt.Errorf("no phases")
	}
	var total float64
	for i, p := range s.Phases {
		if err := p.check(); err != nil {
			return fmt.Errorf("phase %d: %w", i+1, err)
		}
		total += p.Rate * p.Duration.Seconds()
	}
	if total > maxRequests {
		return fmt.Errorf("the schedule sends about %.0f requests; the limit is %d", total, maxRequests)
	}
	return nil
}

// Duration is the schedule's length.
func (s *Schedule) Duration() time.Duration {
	var d time.Duration
	for _, p := range s.Phases {
		d += p.Duration
	}
	return d
}

// Rate is the rate of the phase at elapsed, 0 past the end.
func (s *Schedule) Rate(elapsed time.Duration) float64 {
	for _, p := range s.Phases {
		if elapsed < p.Duration {
			return p.Rate
		}
		elapsed -= p.Duration
	}
	return 0
}

// maxRequests bounds a schedule: a load test is bounded in count.
const maxRequests = 20_000_000

// Requests is how many requests the schedule sends.
func (s *Schedule) Requests() int {
	s.build()
	return len(s.arrivals)
}

// Pace implements vegeta's Pacer: the wait until request number hits (from
// 0) should leave, given the time elapsed; stop once the schedule is over.
func (s *Schedule) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	s.build()
	if hits >= uint64(len(s.arrivals)) {
		return 0, true
	}
	return max(s.arrivals[hits]-elapsed, 0), false
}

// arrival is when request number i (from 0) is due, from the schedule's
// start; past the last request, the schedule's end.
func (s *Schedule) arrival(i uint64) time.Duration {
	s.build()
	if i >= uint64(len(s.arrivals)) {
		return s.Duration()
	}
	return s.arrivals[i]
}

// build computes every arrival time, once.
func (s *Schedule) build() {
	if s.built {
		return
	}
	s.built = true
	rng := rand.New(rand.NewPCG(s.Seed, 0x5105))
	var start time.Duration
	for _, p := range s.Phases {
		end := start + p.Duration
		gap := float64(time.Second) / p.Rate
		switch {
		case p.Rate <= 0:
		case s.Poisson:
			for x := float64(start); len(s.arrivals) < maxRequests; {
				if x += rng.ExpFloat64() * gap; x >= float64(end) {
					break
				}
				s.arrivals = append(s.arrivals, time.Duration(x))
			}
		default:
			// Counted, not accumulated: rate × duration requests exactly.
			n := int(math.Ceil(p.Rate*p.Duration.Seconds() - 1e-9))
			for i := 0; i < n && len(s.arrivals) < maxRequests; i++ {
				s.arrivals = append(s.arrivals, start+time.Duration(float64(i)*gap))
			}
		}
		start = end
	}
}
