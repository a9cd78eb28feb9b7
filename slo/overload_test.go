package slo_test

import (
	"context"
	"errors"
	"fmt"
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
func serveOne(t testing.TB, addr string, newCtrl func() dispatch.Controller, gov dispatch.Governor) (*dispatch.Dispatcher, context.Context, func()) {
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
func overload(t testing.TB, b slo.Batching, addr string, rate int, span time.Duration) outcomes {
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

// BenchmarkOverload measures admission on a real costmodel replica over
// real sockets, at twice what it can serve within the SLO for two seconds:
// the share of the queries answered in time, shed, and late, with and
// without admission. It asserts nothing (the figures depend on the
// machine); TestAdmissionShedsWhatWouldBeLateUnderOverload checks the same
// decisions deterministically. Run with -benchtime=1x.
func BenchmarkOverload(b *testing.B) {
	costmodel := testutil.BuildGo(b, "./examples/costmodel")
	m := testutil.StartModel(b, []string{costmodel, "-a", "20ms", "-b", "1ms"})
	for _, admission := range []bool{false, true} {
		batching := slo.DefaultBatching
		batching.Admission = admission
		b.Run(fmt.Sprintf("admission=%v", admission), func(b *testing.B) {
			var o outcomes
			for b.Loop() {
				o = overload(b, batching, m.Addr, 1000, 2*time.Second)
			}
			if len(o.other) > 0 {
				b.Fatalf("unexpected errors: %v", o.other)
			}
			total := float64(o.ok + o.shed + o.late)
			b.ReportMetric(float64(o.ok)/total, "in-time/query")
			b.ReportMetric(float64(o.shed)/total, "shed/query")
			b.ReportMetric(float64(o.late)/total, "late/query")
		})
	}
}
