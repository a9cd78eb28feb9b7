package autoscale_test

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/autoscale"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLoad is a Source whose arrivals come at a rate the test sets (fake
// arrivals), whose replicas serve a capacity the test sets (a fake fit),
// and whose ready replicas are the state's count unless the test says
// some are still starting.
type fakeLoad struct {
	store *state.Store

	mu       sync.Mutex // guards the fields below
	rate     float64    // queries a second
	arrived  float64
	shed     uint64
	at       time.Time
	capacity float64
	starting int // replicas not ready yet
}

func (f *fakeLoad) set(change func(f *fakeLoad)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	change(f)
}

// advance adds the arrivals since the last call; called with mu held.
func (f *fakeLoad) advance() {
	now := time.Now()
	if !f.at.IsZero() {
		f.arrived += f.rate * now.Sub(f.at).Seconds()
	}
	f.at = now
}

func (f *fakeLoad) Observe(model, version string) (autoscale.Observation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	mv, _ := f.store.Snapshot().Version(model, version)
	return autoscale.Observation{Arrived: uint64(f.arrived), Shed: f.shed, Answered: uint64(f.arrived),
		Ready: mv.Replicas - f.starting, Capacity: f.capacity}, true
}

// TestDecisionRule runs the autoscaler on fake time against a fake fit of
// 100 queries a second per replica and fake arrivals, through a real
// in-memory state: it scales up at once on demand and on sheds, down
// only after the delay and once per drop, and never outside min and max;
// one second's capacity, or sheds of idle replicas, move nothing.
func TestDecisionRule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		store := state.NewStore(state.NewMemory(), state.Options{})
		bounds := &state.Autoscale{Min: 1, Max: 4, Target: 0.8, ScaleDownDelay: 10 * time.Second}
		mv := state.ModelVersion{Model: "m", Version: "1", InputType: state.InputFloat32, Replicas: 1, Autoscale: bounds,
			Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"model"}}}
		if err := store.PutVersion(ctx, mv); err != nil {
			t.Fatal(err)
		}
		load := &fakeLoad{store: store, rate: 50, capacity: 100}
		reg := prometheus.NewRegistry()
		metrics := autoscale.NewMetrics(reg)
		price := 3.6 // per replica-hour: a replica-second costs 0.001
		a := autoscale.New(store, load, metrics, autoscale.Options{
			Pricing: autoscale.Pricing{Runtime: map[state.RuntimeKind]float64{state.RuntimeProcess: price}}})
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		replicas := func() int {
			synctest.Wait()
			v, _ := store.Snapshot().Version("m", "1")
			return v.Replicas
		}
		decisions := func(why autoscale.Reason) int {
			t.Helper()
			// One series per reason that occurred; count the one asked.
			want := fmt.Sprintf("sloproxy_autoscale_decisions_total{model=\"m\",reason=%q,version=\"1\"}", why)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					if mf.GetName() == "sloproxy_autoscale_decisions_total" && labels(m) == want {
						return int(m.GetCounter().GetValue())
					}
				}
			}
			return 0
		}
		step := func(d time.Duration, want int, what string) {
			t.Helper()
			time.Sleep(d)
			if got := replicas(); got != want {
				t.Fatalf("%s: %d replicas after %v, want %d", what, got, d, want)
			}
		}

		step(5*time.Second, 1, "50/s needs one replica at 80% of 100/s")
		load.set(func(f *fakeLoad) { f.capacity = 10 }) // one slow second of the fit: 50/s would need 7
		time.Sleep(1500 * time.Millisecond)
		load.set(func(f *fakeLoad) { f.capacity = 100 })
		step(2500*time.Millisecond, 1, "one second's capacity moves nothing")
		load.set(func(f *fakeLoad) { f.rate = 250 }) // needs ceil(250/80) = 4
		step(1500*time.Millisecond, 4, "up on demand, at once")
		load.set(func(f *fakeLoad) { f.rate = 1000 }) // needs 13
		step(5*time.Second, 4, "never above max")

		load.set(func(f *fakeLoad) { f.rate = 100 }) // needs 2
		step(5*time.Second, 4, "no scale-down before the delay")
		step(7*time.Second, 2, "down once the delay has passed (the first second after the drop straddles it)")
		step(15*time.Second, 2, "2 still needed: no further scale-down")
		if got := decisions(autoscale.Idle); got != 1 {
			t.Fatalf("%d idle decisions, want 1 (one drop, one scale-down)", got)
		}

		load.set(func(f *fakeLoad) { f.rate = 0 })
		step(15*time.Second, 1, "no load: down to min")
		step(15*time.Second, 1, "never below min")

		// Sheds while the replicas are mostly idle (the demand under
		// half the target of their capacity) add no replica.
		load.set(func(f *fakeLoad) { f.rate = 30 }) // needs 1
		for range 5 {
			load.set(func(f *fakeLoad) { f.shed += 10 })
			time.Sleep(time.Second)
		}
		step(0, 1, "sheds of an idle replica")

		// With the fit unknown: sheds within the budget add no replica,
		// nor do sheds while a replica is still starting; sheds beyond it
		// with every replica ready add one.
		load.set(func(f *fakeLoad) { f.capacity = 0 })
		step(6*time.Second, 1, "the fit unknown for longer than the capacity's median spans")
		load.set(func(f *fakeLoad) { f.rate = 1000 })
		load.set(func(f *fakeLoad) { f.shed += 5 }) // 0.5% of a second's arrivals
		step(2*time.Second, 1, "sheds within the budget")
		load.set(func(f *fakeLoad) { f.starting, f.shed = 1, f.shed+100 })
		step(2*time.Second, 1, "sheds while a replica starts")
		load.set(func(f *fakeLoad) { f.starting, f.shed = 0, f.shed+100 })
		step(1500*time.Millisecond, 2, "up on sheds")
		for range 5 {
			load.set(func(f *fakeLoad) { f.shed += 100 })
			time.Sleep(time.Second)
		}
		step(0, 4, "up on sheds, never above max")
		if d, s := decisions(autoscale.Demand), decisions(autoscale.Shed); d != 1 || s != 3 {
			t.Fatalf("decisions: demand %d, shed %d; want 1 and 3", d, s)
		}

		u, perK, ok := a.Usage("m", "1")
		if !ok || u.ReplicaSeconds <= 0 || math.Abs(u.Cost-u.ReplicaSeconds*price/3600) > 1e-9 {
			t.Fatalf("usage %+v (ok %v): want replica-seconds priced at %v an hour", u, ok, price)
		}
		if perK <= 0 {
			t.Fatalf("cost per 1k predictions %v, want positive while queries were answered", perK)
		}
	})
}

// labels spells m as its series name with labels, in the exposition's
// sorted order.
func labels(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "sloproxy_autoscale_decisions_total{" + strings.Join(parts, ",") + "}"
}

// TestCountOnly: an autoscaler that only counts leaves an autoscaled
// version's count where it is under a load that needs more, and still
// counts its replica time.
func TestCountOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		store := state.NewStore(state.NewMemory(), state.Options{})
		mv := state.ModelVersion{Model: "m", Version: "1", InputType: state.InputFloat32, Replicas: 1,
			Autoscale: &state.Autoscale{Min: 1, Max: 4},
			Runtime:   state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"model"}}}
		if err := store.PutVersion(ctx, mv); err != nil {
			t.Fatal(err)
		}
		load := &fakeLoad{store: store, rate: 1000, capacity: 100} // needs 13, capped at 4
		a := autoscale.New(store, load, nil, autoscale.Options{CountOnly: true})
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if v, _ := store.Snapshot().Version("m", "1"); v.Replicas != 1 {
			t.Fatalf("%d replicas, want 1: a counting autoscaler decides nothing", v.Replicas)
		}
		if u, _, ok := a.Usage("m", "1"); !ok || u.ReplicaSeconds < 4 {
			t.Fatalf("usage %+v, %v; want about 5 replica-seconds counted", u, ok)
		}
	})
}
