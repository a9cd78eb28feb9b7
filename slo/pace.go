package slo

import (
	"slices"
	"sync"
	"time"
)

// pacer staggers the batch starts of one model version's replicas (see
// Governor.Hold).
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
//
// The pacer also keeps when each batch in flight is expected to end, from
// which admission predicts the next start (nextStart).
type pacer struct {
	mu      sync.Mutex    // guards the fields below
	ends    []time.Time   // when the batches in flight are expected to end
	last    time.Time     // the latest batch's start
	service time.Duration // moving average of batches' service times; 0 before the first
}

// serviceWeight is the moving average's weight of the newest service time.
const serviceWeight = 8 // 1/8

// started records a batch's start at now, expected to end at end.
func (p *pacer) started(now, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ends = append(p.ends, end)
	p.last = now
}

// finished records a batch's end and, when it was answered, its service
// time.
func (p *pacer) finished(end time.Time, service time.Duration, answered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.ends, end); i >= 0 {
		p.ends[i] = p.ends[len(p.ends)-1]
		p.ends = p.ends[:len(p.ends)-1]
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
	inFlight, last, service := len(p.ends), p.last, p.service
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

// typical is the moving average of the batches' service times by which
// the starts are spaced; 0 before the first.
func (p *pacer) typical() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.service
}

// nextStart is how long from now until a worker takes the next batch,
// over lanes lanes: when a lane is free, or else the earliest that a batch
// in flight is expected to end (now, if that is past), and no earlier,
// when paced, than a 1/lanes share of a service time after the latest
// start. That floor is taken even where hold would not hold (one lane, or
// a queue that fills the batch), which errs late: admission then sheds a
// little more, never lets in a query it should not.
func (p *pacer) nextStart(now time.Time, lanes int, paced bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := now
	if len(p.ends) >= lanes {
		at = slices.MinFunc(p.ends, time.Time.Compare)
	}
	if paced && len(p.ends) > 0 && p.service > 0 {
		at = later(at, p.last.Add(p.service/time.Duration(max(1, lanes))))
	}
	return max(0, at.Sub(now))
}
