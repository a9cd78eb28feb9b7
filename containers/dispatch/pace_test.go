package dispatch

import (
	"testing"
	"time"
)

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
				p.started(t0.Add(-time.Hour))
				p.finished(10*ms, true)
			}
			for range c.inFlight {
				p.started(t0)
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
		p.started(time.Time{})
		p.finished(c.service, c.answered)
		if p.service != c.want || p.inFlight != 0 {
			t.Fatalf("after %v (answered %v): service %v, in flight %d; want %v, 0", c.service, c.answered, p.service, p.inFlight, c.want)
		}
	}
}
