package slo

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
)

// simQuery is one query of a simulation.
type simQuery struct {
	arrived, deadline time.Time
	pred              dispatch.Prediction
	due               int // the batch admission let it in to ride, counted as sent counts; 0: none
}

// simOutcomes counts how a simulation's queries were answered, and the
// answers in time in each 100ms after the warm-up.
type simOutcomes struct {
	ok, shed, late int
	okPerTenth     []int
}

// controllerSizes is a one-replica dispatcher's BatchSizer: its
// controller's size for a waiting query, told the governor's spacing.
type controllerSizes struct {
	ctrl dispatch.Controller
	gov  *Governor
	max  int
}

func (s controllerSizes) size(slack, slo time.Duration) int {
	if la, ok := s.ctrl.(interface{ SetLanes(int, time.Duration) }); ok {
		la.SetLanes(s.gov.Spacing(1))
	}
	return min(s.max, s.ctrl.BatchSize(slack, slo))
}

func (s controllerSizes) BatchSize(budget time.Duration) int { return max(1, s.size(-1, budget)) }

// simulate runs b's controller and governor over one replica of one slot
// whose batches of n take 20ms + 1ms·n plus up to 2ms (a = 20ms, b = 1ms:
// 500 queries a second at most within an 80ms SLO, see the package's
// budgets), as a dispatcher would: a query is asked for admission when
// others are queued, the queue is served earliest deadline first, a head
// the controller refuses is answered at once, a query still waiting at
// its deadline is answered late, a batch takes past the controller's size
// the queries admitted to ride it, and a batch outliving the latest
// deadline of its queries is abandoned. Queries arrive rate a second for
// span after a warm-up at a tenth of that rate, each with an 80ms SLO. It
// runs in a synctest bubble: the clock is the bubble's, and the outcomes
// depend on nothing but b.
//
// spell, when not nil, is added to each batch's latency, given how long
// after the warm-up the batch starts: a spell of the machine.
func simulate(t *testing.T, b Batching, rate int, span time.Duration, spell func(time.Duration) time.Duration) simOutcomes {
	t.Helper()
	var o simOutcomes
	synctest.Test(t, func(t *testing.T) {
		const (
			slo  = 80 * time.Millisecond
			step = 100 * time.Microsecond
		)
		gov, ctrl := b.NewGovernor(), b.NewController()()
		sizes := controllerSizes{ctrl: ctrl, gov: gov, max: 64}
		var (
			queue      []*simQuery
			batch      []*simQuery
			start, end time.Time // of the batch in flight
			busyUntil  time.Time
			sent       int
			counting   bool
			out        = &simOutcomes{}
			warm       = 10 * time.Second / time.Duration(rate)
			every      = time.Second / time.Duration(rate)
			t0         = time.Now()
			warmEnd    = t0.Add(time.Duration(rate/10) * warm)
			stop       = warmEnd.Add(span)
			next       = t0
			finished   = func(q *simQuery, now time.Time, expired bool) {
				if q.pred.Batch > 0 {
					gov.Finished(q.pred, now, expired)
				}
			}
		)
		for now := time.Now(); now.Before(stop) || len(queue) > 0 || batch != nil; now = time.Now() {
			if !counting && !now.Before(warmEnd) {
				counting, out = true, &o
			}
			for now.Before(stop) && !next.After(now) {
				q := &simQuery{arrived: now, deadline: now.Add(slo)}
				if next = next.Add(every); next.Before(warmEnd) {
					next = next.Add(warm - every)
				}
				if len(queue) > 0 {
					p, err := gov.Admit(dispatch.Arrival{Model: "sim:1", Arrived: now, Deadline: q.deadline, Queued: len(queue),
						Replicas: 1, Slots: 1, Sizes: sizes})
					if err != nil {
						out.shed++
						continue
					}
					q.pred = p
					if p.Batch > 0 {
						q.due = sent + p.Batch
					}
				}
				queue = append(queue, q)
			}
			for len(queue) > 0 && !queue[0].deadline.After(now) {
				out.late++
				finished(queue[0], now, true)
				queue = queue[1:]
			}
			if batch != nil && !now.Before(busyUntil) {
				latency := now.Sub(start)
				gov.Ended(len(batch), end, latency, dispatch.Answered)
				ctrl.Observe(len(batch), latency)
				for _, q := range batch {
					if now.After(q.deadline) {
						out.late++
						finished(q, q.deadline, true)
					} else {
						out.ok++
						if counting {
							tenth := int(now.Sub(warmEnd) / (100 * time.Millisecond))
							for len(out.okPerTenth) <= tenth {
								out.okPerTenth = append(out.okPerTenth, 0)
							}
							out.okPerTenth[tenth]++
						}
						finished(q, now, false)
					}
				}
				batch = nil
			}
			if batch != nil && !now.Before(batch[len(batch)-1].deadline) {
				// Every query's deadline passed: the batch is abandoned.
				latency := now.Sub(start)
				gov.Ended(len(batch), end, latency, dispatch.Overran)
				if oo, ok := ctrl.(dispatch.OverrunObserver); ok {
					oo.ObserveOverrun(len(batch), latency)
				}
				for _, q := range batch {
					out.late++
					finished(q, q.deadline, true)
				}
				batch = nil
			}
			for batch == nil && len(queue) > 0 {
				head := queue[0]
				n := sizes.size(head.deadline.Sub(now), head.deadline.Sub(head.arrived))
				if n == 0 { // doomed: answered at once
					out.late++
					finished(head, now, true)
					queue = queue[1:]
					continue
				}
				if gov.Hold(now, 1, n, len(queue), head.deadline.Sub(now)) > 0 {
					break
				}
				k := min(n, len(queue))
				for k < min(64, len(queue)) && queue[k].due > 0 && queue[k].due <= sent+1 {
					k++ // admitted to ride this batch: it rides it, as dispatch's queue takes it
				}
				batch, queue = append([]*simQuery(nil), queue[:k]...), queue[k:]
				start, end = now, gov.Started(now, k)
				busyUntil = now.Add(20*time.Millisecond + time.Duration(k)*time.Millisecond + time.Duration(sent%5)*500*time.Microsecond)
				if spell != nil && !now.Before(warmEnd) {
					busyUntil = busyUntil.Add(spell(now.Sub(warmEnd)))
				}
				sent++
			}
			time.Sleep(step)
		}
	})
	return o
}

// TestAdmissionShedsWhatWouldBeLateUnderOverload: at twice what the
// replica can serve within the SLO, admission refuses at once the queries
// it cannot serve, so the ones it admits are answered in time, and more of
// them than without it, where every query queues and most wait until
// their deadline.
func TestAdmissionShedsWhatWouldBeLateUnderOverload(t *testing.T) {
	with := DefaultBatching
	without := DefaultBatching
	without.Admission = false
	off := simulate(t, without, 1000, 2*time.Second, nil)
	on := simulate(t, with, 1000, 2*time.Second, nil)
	t.Logf("without admission: %+v; with: %+v", off, on)
	if on.ok <= off.ok {
		t.Errorf("admission answered %d in time, no more than the %d without it", on.ok, off.ok)
	}
	if on.shed == 0 {
		t.Fatal("with admission no query was shed under twice the capacity")
	}
	if on.late*20 > on.ok {
		t.Errorf("with admission %d admitted queries were late against %d in time: more than 1 in 20", on.late, on.ok)
	}
	if off.late <= on.late {
		t.Errorf("admission did not reduce the late queries: %d without, %d with", off.late, on.late)
	}
}

// TestAIMDHasNoCliffAtTheBound: the replica serves at most about 490
// queries a second within the SLO (batches of 20 in 40–42ms, the budget
// of half the SLO). Past that rate admission sheds what cannot make it,
// and what the replica answers in time must plateau, not fall. It fell
// when AIMD's sawtooth cut the batch that queries had been admitted to
// ride: the last of them rode the next batch, a whole batch later than
// admission predicted, the calibrated margin grew by that batch, and
// admission then let in only what an almost empty queue could hold, so
// the batches shrank and the replica answered a quarter less than below
// the bound.
func TestAIMDHasNoCliffAtTheBound(t *testing.T) {
	b := DefaultBatching
	b.Controller = ControllerAIMD
	below := simulate(t, b, 450, 2*time.Second, nil)
	for _, rate := range []int{500, 575} {
		o := simulate(t, b, rate, 2*time.Second, nil)
		t.Logf("at %d/s: %+v; at 450/s: %+v", rate, o, below)
		if o.ok*20 < below.ok*19 {
			t.Errorf("at %d/s %d answered in time, more than 5%% under the %d at 450/s", rate, o.ok, below.ok)
		}
		if o.late*100 > o.ok {
			t.Errorf("at %d/s %d admitted queries were late against %d in time: more than 1 in 100", rate, o.late, o.ok)
		}
	}
}

// TestASpellEndsWithItsAftermath: a spell of 300ms in which every batch
// takes up to 15ms longer, at 0.8 of the bound, raises the fit's tail and
// the calibrated margin, and admission sheds; once the spell's batches
// and errors are past FitSpan and calStale the shedding stops. It must not
// feed itself: the replica answers nearly all it is offered in the last
// second, as before the spell.
func TestASpellEndsWithItsAftermath(t *testing.T) {
	for _, c := range []string{ControllerAIMD, ControllerLatencyModel} {
		b := DefaultBatching
		b.Controller = c
		spell := func(at time.Duration) time.Duration {
			if at >= 500*time.Millisecond && at < 800*time.Millisecond {
				return time.Duration(at%15) * time.Millisecond
			}
			return 0
		}
		o := simulate(t, b, 400, 3*time.Second, spell)
		t.Logf("%s: %+v", c, o)
		last := 0
		for _, n := range o.okPerTenth[20:30] {
			last += n
		}
		if last < 380 {
			t.Errorf("%s: %d answered in time in the last second at 400/s, want at least 380: the spell 1.2s before outlived its aftermath", c, last)
		}
	}
}
