package dispatch

import (
	"slices"
	"sync"
	"time"
)

// pacer staggers the batch starts of one model version's replicas.
//
// Replicas that pull whenever they come free fall into step: two replicas
// that finish close together both take what is queued, and the queries
// that arrive next wait for a whole batch before either is free again, so
// a query's latency approaches twice a batch's service time. Started an
// even share of a service time apart (half of it for two lanes), the
// replicas hand out batches twice as often and a query waits at most that
// share: for the same objective each batch may be larger, and the version
// answers more.
//
// A free worker therefore holds its batch until the share since the
// latest start has passed, but never when no other batch is in flight (an
// idle version answers at once), when the queue already fills the batch,
// or for longer than the head's slack less one service time.
type pacer struct {
	mu      sync.Mutex    // guards the fields below
	flights []flight      // the batches in flight
	last    time.Time     // the latest batch's start
	service time.Duration // moving average of batches' service times; 0 before the first
}

// flight is a batch in flight: when it started and when it is due to end.
type flight struct{ start, due time.Time }

// serviceWeight is the moving average's weight of the newest service time.
const serviceWeight = 8 // 1/8

// started records a batch's start at now and when it is due to end.
func (p *pacer) started(now, due time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flights = append(p.flights, flight{now, due})
	p.last = now
}

// finished records the end of the batch that started at start and, when
// it was answered, its service time.
func (p *pacer) finished(start time.Time, service time.Duration, answered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.IndexFunc(p.flights, func(f flight) bool { return f.start.Equal(start) }); i >= 0 {
		p.flights = slices.Delete(p.flights, i, i+1)
	}
	if !answered {
		return
	}
	if p.service == 0 {
		p.service = service
	} else {
		p.service += (service - p.service) / serviceWeight
	}
}

// hold is how long a free worker waits before taking a batch of up to n
// from queued queries, of which the head has slack left (negative: no
// deadline), when lanes workers serve the version.
func (p *pacer) hold(now time.Time, lanes, n, queued int, slack time.Duration) time.Duration {
	if lanes < 2 || queued == 0 || queued >= n {
		return 0
	}
	p.mu.Lock()
	inFlight, last, service := len(p.flights), p.last, p.service
	p.mu.Unlock()
	if inFlight == 0 || service == 0 {
		return 0
	}
	wait := last.Add(service / time.Duration(lanes)).Sub(now)
	if slack >= 0 {
		wait = min(wait, slack-service)
	}
	return max(0, wait)
}

// untilStart is how long after now a worker takes the next batch, over
// lanes worker slots: at once while a slot is free, else when the first
// batch in flight is due to end; when the worker would hold a batch that
// the queue does not fill (held: pacing, fewer queued than a batch), not
// before the pacing share after the latest start (see hold).
func (p *pacer) untilStart(now time.Time, lanes int, held bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var wait time.Duration
	if len(p.flights) > 0 && len(p.flights) >= lanes {
		wait = slices.MinFunc(p.flights, func(a, b flight) int { return a.due.Compare(b.due) }).due.Sub(now)
	}
	if held && lanes >= 2 && len(p.flights) > 0 && p.service > 0 {
		wait = max(wait, p.last.Add(p.service/time.Duration(lanes)).Sub(now))
	}
	return max(0, wait)
}
