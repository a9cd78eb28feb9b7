package slo_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/slo"
)

// outcomes counts how a stream of queries was answered.
type outcomes struct {
	ok, shed, late int
	other          []error
}

// serveOne starts a dispatcher over the one costmodel replica at addr,
// with the controllers newCtrl makes and the governor gov, and waits
// until the replica is healthy. It returns the
// dispatcher, the context to send queries under, and what stops both.
func serveOne(t *testing.T, addr string, newCtrl func() dispatch.Controller, gov dispatch.Governor) (*dispatch.Dispatcher, context.Context, func()) {
	t.Helper()
	d := dispatch.New(dispatch.Options{Model: "cost", Version: "1", InputType: rpc.Float32, MaxBatch: 64,
		NewController: newCtrl, Governor: gov, HeartbeatInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	d.Start(ctx)
	stop := func() { d.Close(); cancel() }
	healthy := false
	defer func() {
		if !healthy { // Eventually failed the test
			stop()
		}
	}()
	d.SetReplicas([]string{addr})
	testutil.Eventually(t, 10*time.Second, "the replica is healthy", func() bool { _, h := d.Replicas(); return h == 1 })
	healthy = true
	return d, ctx, stop
}

// overload sends rate queries a second for span to a dispatcher over one
// costmodel replica (a = 20ms, b = 1ms: 500 queries a second at most
// within an 80ms SLO, see package slo's budgets), each with an 80ms
// deadline, and counts the outcomes.
func overload(t *testing.T, b slo.Batching, addr string, rate int, span time.Duration) outcomes {
	t.Helper()
	d, ctx, stop := serveOne(t, addr, b.NewController(), b.NewGovernor())
	defer stop()

	// Warm-up at a tenth of the rate: the governor and the controller
	// learn from real batches before the overload.
	send := func(n int, every time.Duration, out *outcomes) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range n {
			<-tick.C
			wg.Go(func() {
				qctx, qcancel := context.WithTimeout(ctx, 80*time.Millisecond)
				defer qcancel()
				_, _, err := d.Predict(qctx, make([]byte, 4))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					out.ok++
				case errors.Is(err, dispatch.ErrShed):
					out.shed++
				case errors.Is(err, dispatch.ErrDeadline):
					out.late++
				default:
					out.other = append(out.other, err)
				}
			})
		}
		wg.Wait()
	}
	send(rate/10, 10*time.Second/time.Duration(rate), &outcomes{})
	var o outcomes
	send(int(span.Seconds()*float64(rate)), time.Second/time.Duration(rate), &o)
	return o
}

func TestAdmissionShedsWhatWouldBeLateUnderOverload(t *testing.T) {
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	m := testutil.StartModel(t, []string{costmodel, "-a", "20ms", "-b", "1ms"})
	withAdmission := slo.DefaultBatching
	without := slo.DefaultBatching
	without.Admission = false

	// Twice what the replica can serve within the SLO, for two seconds.
	var results [2]outcomes
	for i, b := range []slo.Batching{without, withAdmission} {
		results[i] = overload(t, b, m.Addr, 1000, 2*time.Second)
		t.Logf("admission=%v: %d answered in time, %d shed, %d waited until their deadline, %d other errors",
			b.Admission, results[i].ok, results[i].shed, results[i].late, len(results[i].other))
	}
	for _, r := range results {
		if len(r.other) > 0 {
			t.Fatalf("unexpected errors: %v", r.other)
		}
	}
	// Without admission every query is queued; the controller still
	// refuses, when it comes to them, those at the head of the queue that
	// could no longer make their deadline even alone (they count as shed
	// here), but by then they have waited. With admission the queries the
	// replica cannot serve are refused at once, so the ones it admits are
	// answered in time rather than late, and more of them.
	off, on := results[0], results[1]
	if on.ok <= off.ok {
		t.Errorf("admission answered %d in time, no more than the %d without it", on.ok, off.ok)
	}
	if on.shed == 0 {
		t.Fatal("with admission no query was shed under twice the capacity")
	}
	if on.late >= on.ok {
		t.Errorf("with admission %d admitted queries missed their deadline and %d made it: admission let in what it could not serve", on.late, on.ok)
	}
	if off.late <= on.late {
		t.Errorf("admission did not reduce the queries that waited until their deadline: %d without, %d with", off.late, on.late)
	}
}
