package slo

import (
	"testing"
	"time"
)

// served gives p a service time, from a batch that ended long before t0.
func served(p *pacer, t0 time.Time, service time.Duration) {
	long := t0.Add(-time.Hour)
	p.started(long, long)
	p.finished(long, service, true)
}

func TestPacerHold(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	// A pacer whose latest batch started at t0, with a 10 ms service time
	// and one batch in flight, unless the case says otherwise.
	cases := []struct {
		name         string
		inFlight     int
		noService    bool
		after        time.Duration // now - t0
		lanes, n, qd int
		slack        time.Duration
		want         time.Duration
	}{
		{name: "two lanes: half a service time after the latest start", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: 18 * ms, want: 4 * ms},
		{name: "four lanes: a quarter", inFlight: 1, after: 1 * ms, lanes: 4, n: 20, qd: 3, slack: 18 * ms, want: 1500 * time.Microsecond},
		{name: "share already past", inFlight: 1, after: 6 * ms, lanes: 2, n: 20, qd: 3, slack: 18 * ms, want: 0},
		{name: "the head's slack less a service time bounds it", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: 12 * ms, want: 2 * ms},
		{name: "a head that cannot wait", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: 9 * ms, want: 0},
		{name: "a head without deadline", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: -1, want: 4 * ms},
		{name: "nothing else in flight: the version is idle", inFlight: 0, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: 18 * ms, want: 0},
		{name: "the queue fills the batch", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 20, slack: 18 * ms, want: 0},
		{name: "empty queue", inFlight: 1, after: 1 * ms, lanes: 2, n: 20, qd: 0, slack: -1, want: 0},
		{name: "one lane", inFlight: 1, after: 1 * ms, lanes: 1, n: 20, qd: 3, slack: 18 * ms, want: 0},
		{name: "no service time measured yet", inFlight: 1, noService: true, after: 1 * ms, lanes: 2, n: 20, qd: 3, slack: 18 * ms, want: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &pacer{}
			if !c.noService {
				served(p, t0, 10*ms)
			}
			for range c.inFlight {
				p.started(t0, t0.Add(10*ms))
			}
			if got := p.hold(t0.Add(c.after), c.lanes, c.n, c.qd, c.slack); got != c.want {
				t.Errorf("hold = %v, want %v", got, c.want)
			}
		})
	}
}

func TestPacerServiceIsAMovingAverage(t *testing.T) {
	p := &pacer{}
	for _, c := range []struct {
		service  time.Duration
		answered bool
		want     time.Duration
	}{
		{8 * time.Millisecond, true, 8 * time.Millisecond},
		{16 * time.Millisecond, true, 9 * time.Millisecond},
		{time.Second, false, 9 * time.Millisecond}, // a failed batch says nothing of service times
		{time.Millisecond, true, 8 * time.Millisecond},
	} {
		end := time.Unix(0, 0).Add(c.service)
		p.started(time.Unix(0, 0), end)
		p.finished(end, c.service, c.answered)
		if p.service != c.want || len(p.ends) != 0 {
			t.Fatalf("after %v (answered %v): service %v, in flight %d; want %v, 0", c.service, c.answered, p.service, len(p.ends), c.want)
		}
	}
}

func TestPacerNextStart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	// batch is one in flight: its start and expected end, from t0.
	type batch struct{ start, end time.Duration }
	cases := []struct {
		name     string
		inFlight []batch
		lanes    int
		paced    bool
		after    time.Duration // now - t0
		want     time.Duration
	}{
		{name: "idle: now", lanes: 2, paced: true, after: 1 * ms, want: 0},
		{name: "a lane free, unpaced: now", inFlight: []batch{{0, 10 * ms}}, lanes: 2, after: 1 * ms, want: 0},
		{name: "a lane free, paced: half a service time after the latest start", inFlight: []batch{{0, 10 * ms}}, lanes: 2, paced: true, after: 1 * ms, want: 4 * ms},
		{name: "every lane busy: the earliest expected end", inFlight: []batch{{0, 10 * ms}, {-4 * ms, 6 * ms}}, lanes: 2, after: 1 * ms, want: 5 * ms},
		{name: "every lane busy, paced: the share after the latest start comes later", inFlight: []batch{{-4 * ms, 2 * ms}, {0, 10 * ms}}, lanes: 2, paced: true, after: 1 * ms, want: 4 * ms},
		{name: "one lane, paced: the floor is still taken, a service time after the latest start", inFlight: []batch{{0, 5 * ms}}, lanes: 1, paced: true, after: 1 * ms, want: 9 * ms},
		{name: "an end past due: now", inFlight: []batch{{-20 * ms, -10 * ms}}, lanes: 1, after: 1 * ms, want: 0},
		{name: "more in flight than lanes (a replica ejected)", inFlight: []batch{{0, 10 * ms}, {0, 8 * ms}, {0, 9 * ms}}, lanes: 2, after: 1 * ms, want: 7 * ms},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &pacer{}
			served(p, t0, 10*ms)
			for _, b := range c.inFlight {
				p.started(t0.Add(b.start), t0.Add(b.end))
			}
			if got := p.nextStart(t0.Add(c.after), c.lanes, c.paced); got != c.want {
				t.Errorf("nextStart = %v, want %v", got, c.want)
			}
		})
	}
}

func TestPacerFinishedForgetsTheBatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	p := &pacer{}
	// Two batches expected to end at the same moment, and a third.
	p.started(t0, t0.Add(5*ms))
	p.started(t0, t0.Add(5*ms))
	p.started(t0, t0.Add(8*ms))
	p.finished(t0.Add(5*ms), 5*ms, true)
	if got := p.nextStart(t0, 2, false); got != 5*ms {
		t.Fatalf("after one of the two ending at 5ms finished: next start in %v, want 5ms", got)
	}
	p.finished(t0.Add(5*ms), 5*ms, true)
	if got := p.nextStart(t0, 2, false); got != 0 {
		t.Fatalf("one batch in flight over two lanes: next start in %v, want 0", got)
	}
	if got := p.nextStart(t0, 1, false); got != 8*ms {
		t.Fatalf("one lane: next start in %v, want the remaining batch's end, 8ms", got)
	}
}
