package dispatch

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// gated echoes its inputs and records each batch; while gate is open
// (not nil) a batch waits for it to close.
type gated struct {
	mu      sync.Mutex // guards batches and gate
	batches [][]string
	gate    chan struct{}
	started chan struct{} // receives once per batch
}

func (g *gated) Predict(ctx context.Context, inputs [][]byte) ([]rpc.Output, error) {
	g.mu.Lock()
	var b []string
	for _, in := range inputs {
		b = append(b, string(in))
	}
	g.batches = append(g.batches, b)
	gate := g.gate
	g.mu.Unlock()
	select {
	case g.started <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]rpc.Output, len(inputs))
	for i, in := range inputs {
		out[i].Data = in
	}
	return out, nil
}

func (g *gated) recorded() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.batches)
}

// sloSized chooses 4 for a query with an SLO, no limit without one.
type sloSized struct{}

func (sloSized) BatchSize(_, slo time.Duration) int {
	if slo > 0 {
		return 4
	}
	return NoLimit
}
func (sloSized) Observe(int, time.Duration) {}

// queuedRecorder is a Governor that admits every query and records how
// many queries admission was told were queued.
type queuedRecorder struct {
	spacer
	mu     *sync.Mutex
	queued *[]int
}

func (r queuedRecorder) Admit(a Arrival) (Prediction, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.queued = append(*r.queued, a.Queued)
	return Prediction{}, nil
}

// predictAll sends each input from its own goroutine with ctx and returns
// a function that waits for them and returns the first error.
func predictAll(d *Dispatcher, ctx context.Context, inputs ...string) func() error {
	errs := make(chan error, len(inputs))
	for _, in := range inputs {
		go func() {
			out, _, err := d.Predict(ctx, []byte(in))
			if err == nil && string(out) != in {
				err = errors.New("wrong answer")
			}
			errs <- err
		}()
	}
	return func() error {
		var first error
		for range inputs {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func names(prefix string, n int) []string {
	var s []string
	for i := range n {
		s = append(s, prefix+string(rune('a'+i)))
	}
	return s
}

func TestBackgroundQueriesTakeOnlyIdleCapacity(t *testing.T) {
	g := &gated{started: make(chan struct{}, 64)}
	var mu sync.Mutex
	var queued []int
	d := startDispatcher(t, Options{MaxBatch: 16, NewController: func() Controller { return sloSized{} },
		Governor: queuedRecorder{mu: &mu, queued: &queued}}, serve(t, g).addr)
	bg := Background(context.Background())

	queuedN := func(n int) func() bool { return func() bool { return d.Queued() == n } }
	// hold makes the replica busy with one background batch.
	hold := func() func() error {
		g.mu.Lock()
		g.gate = make(chan struct{})
		g.mu.Unlock()
		for len(g.started) > 0 {
			<-g.started
		}
		wait := predictAll(d, bg, "busy")
		<-g.started
		return wait
	}
	release := func() {
		g.mu.Lock()
		close(g.gate)
		g.gate = nil
		g.mu.Unlock()
	}

	// No online query yet: background batches take MaxBatch.
	waitBusy := hold()
	waitX := predictAll(d, bg, names("x", 20)...)
	testutil.Eventually(t, 5*time.Second, "20 queued", queuedN(20))
	release()
	if err := errors.Join(waitBusy(), waitX()); err != nil {
		t.Fatal(err)
	}
	if b := g.recorded(); len(b) < 2 || len(b[1]) != 16 {
		t.Fatalf("batches %v: want the second of 16, MaxBatch, with no online query in sight", b)
	}

	// Hold the replica busy again, queue more background queries, then
	// online ones: the online ones leave first, and admission counted
	// only them.
	g.mu.Lock()
	g.batches = nil
	g.mu.Unlock()
	waitBusy = hold()
	waitBG := predictAll(d, bg, names("b", 10)...)
	testutil.Eventually(t, 5*time.Second, "10 queued", queuedN(10))
	online, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait1 := predictAll(d, online, "o1")
	testutil.Eventually(t, 5*time.Second, "11 queued", queuedN(11))
	wait2 := predictAll(d, online, "o2")
	testutil.Eventually(t, 5*time.Second, "12 queued", queuedN(12))
	release()
	for _, wait := range []func() error{waitBusy, wait1, wait2, waitBG} {
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	}
	b := g.recorded()
	if len(b) < 2 || !slices.Contains(b[1], "o1") || !slices.Contains(b[1], "o2") || len(b[1]) != 4 {
		t.Fatalf("batches %v: want the online queries first after the busy batch, filled with background ones to the online size 4", b)
	}
	// After an online query, batches that background queries lead take
	// the online SLO's size.
	for _, batch := range b[2:] {
		if len(batch) > 4 {
			t.Fatalf("batches %v: a background batch of %d after online queries came, want at most 4", b, len(batch))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(queued, []int{1}) {
		t.Fatalf("admission was told of %v queued; want [1]: the second online query asked, behind the first, the background ones not counted", queued)
	}
}
