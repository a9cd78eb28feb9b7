package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// model echoes its inputs after delay, counting inputs and batch sizes.
type model struct {
	delay   time.Duration
	inputs  atomic.Int64
	mu      sync.Mutex // guards biggest
	biggest int
	got     chan struct{} // closed when the first batch arrives
	gotOnce sync.Once     // makes got
	gotDone sync.Once     // closes got
}

// first returns a channel closed once m has a batch; call it before the
// model serves.
func (m *model) first() <-chan struct{} {
	m.gotOnce.Do(func() { m.got = make(chan struct{}) })
	return m.got
}

func (m *model) Predict(ctx context.Context, inputs [][]byte) ([]rpc.Output, error) {
	m.inputs.Add(int64(len(inputs)))
	m.gotOnce.Do(func() { m.got = make(chan struct{}) })
	m.gotDone.Do(func() { close(m.got) })
	m.mu.Lock()
	m.biggest = max(m.biggest, len(inputs))
	m.mu.Unlock()
	if m.delay > 0 {
		select {
		case <-time.After(m.delay):
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

// server is a model container on a loopback port, stoppable mid-test.
type server struct {
	addr string
	stop func()
}

func serve(t *testing.T, m rpc.Model) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rpc.NewServer(m, rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.Bytes}}).Serve(ctx, ln)
	}()
	var once sync.Once
	s := &server{addr: ln.Addr().String(), stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(s.stop)
	return s
}

func startDispatcher(t *testing.T, opts Options, addrs ...string) *Dispatcher {
	t.Helper()
	opts.InputType = rpc.Bytes
	opts.HeartbeatInterval = 20 * time.Millisecond
	opts.HeartbeatTimeout = 50 * time.Millisecond
	opts.Client.MinBackoff = 10 * time.Millisecond
	opts.Client.MaxBackoff = 50 * time.Millisecond
	d := New(opts)
	d.Start(context.Background())
	d.SetReplicas(addrs)
	t.Cleanup(d.Close)
	waitHealthy(t, d, len(addrs))
	return d
}

func waitHealthy(t *testing.T, d *Dispatcher, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%d healthy replicas", n), func() bool { _, h := d.Replicas(); return h == n })
}

// stream sends n queries from c goroutines, each with the given timeout,
// and returns the errors.
func stream(d *Dispatcher, n, c int, timeout time.Duration, between time.Duration) (answers map[string]int, errs []error) {
	var mu sync.Mutex
	answers = map[string]int{}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				in := fmt.Sprint("q", i)
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				out, replica, err := d.Predict(ctx, []byte(in))
				cancel()
				mu.Lock()
				if err == nil && string(out) != in {
					err = fmt.Errorf("query %s answered %q", in, out)
				}
				if err != nil {
					errs = append(errs, err)
				} else {
					answers[replica]++
				}
				mu.Unlock()
				time.Sleep(between)
			}
		}()
	}
	wg.Wait()
	return answers, errs
}

func TestQueriesSpreadOverReplicas(t *testing.T) {
	a, b := serve(t, &model{delay: time.Millisecond}), serve(t, &model{delay: time.Millisecond})
	d := startDispatcher(t, Options{MaxBatch: 8}, a.addr, b.addr)
	answers, errs := stream(d, 400, 16, 5*time.Second, 0)
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	if answers[a.addr] == 0 || answers[b.addr] == 0 {
		t.Fatalf("answers per replica %v: both should take work", answers)
	}
}

func TestBatchesRespectTheController(t *testing.T) {
	m := &model{delay: 5 * time.Millisecond}
	d := startDispatcher(t, Options{MaxBatch: 64, NewController: func() Controller { return fixed(4) }}, serve(t, m).addr)
	if _, errs := stream(d, 100, 32, 5*time.Second, 0); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if m.biggest != 4 {
		t.Fatalf("largest batch %d, want 4 (32 callers keep the queue full)", m.biggest)
	}
}

// fixed is a Controller that always chooses the same size.
type fixed int

func (f fixed) BatchSize(time.Duration, time.Duration) int { return int(f) }
func (fixed) Observe(int, time.Duration)                   {}

// spacer is a Governor that admits every query, holds no worker, and says
// that batch starts are staggered over every worker slot, typical apart.
type spacer struct{ typical time.Duration }

func (spacer) Admit(Arrival) (Prediction, error)                          { return Prediction{}, nil }
func (spacer) Finished(Prediction, time.Time, bool)                       {}
func (spacer) Hold(time.Time, int, int, int, time.Duration) time.Duration { return 0 }
func (s spacer) Spacing(workers int) (int, time.Duration)                 { return workers, s.typical }
func (spacer) Started(now time.Time, _ int) time.Time                     { return now }
func (spacer) Ended(int, time.Time, time.Duration, Outcome)               {}

// paceRecorder is a fixed size that records what the dispatcher tells
// lane-aware controllers.
type paceRecorder struct {
	fixed
	mu      *sync.Mutex
	lanes   *int
	typical *time.Duration
}

func (r paceRecorder) SetLanes(lanes int, typical time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.lanes, *r.typical = lanes, typical
}

func TestLaneAwareControllersAreToldTheGovernorsSpacing(t *testing.T) {
	const delay = 5 * time.Millisecond
	var mu sync.Mutex
	var lanes int
	var typical time.Duration
	d := startDispatcher(t, Options{MaxBatch: 64, Governor: spacer{typical: 7 * time.Millisecond}, NewController: func() Controller {
		return paceRecorder{fixed: 4, mu: &mu, lanes: &lanes, typical: &typical}
	}}, serve(t, &model{delay: delay}).addr, serve(t, &model{delay: delay}).addr)
	if _, errs := stream(d, 200, 16, 5*time.Second, 0); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	mu.Lock()
	defer mu.Unlock()
	if lanes != 2 || typical != 7*time.Millisecond {
		t.Errorf("told %d lanes and a typical batch of %v; want the governor's spacing for two replicas of one slot: 2 and 7ms", lanes, typical)
	}
}

// occupy sends one query without a deadline to d, whose only replica
// serves m, and returns once m has it; the channel gets its error when it
// is answered.
func occupy(t *testing.T, d *Dispatcher, m *model) <-chan error {
	t.Helper()
	got := m.first()
	busy := make(chan error, 1)
	go func() {
		_, _, err := d.Predict(context.Background(), []byte("first"))
		busy <- err
	}()
	select {
	case <-got:
	case err := <-busy:
		t.Fatalf("the first query was answered before the model got it: %v", err)
	}
	return busy
}

func TestExpiredQueriesNeverReachTheModel(t *testing.T) {
	m := &model{delay: 100 * time.Millisecond}
	d := startDispatcher(t, Options{MaxBatch: 1}, serve(t, m).addr)
	// The first query occupies the only replica for 100 ms; the others
	// expire in the queue meanwhile.
	busy := occupy(t, d, m)
	_, errs := stream(d, 20, 20, 20*time.Millisecond, 0)
	if len(errs) != 20 {
		t.Fatalf("%d of 20 queries failed, want all (their deadline is before the replica frees)", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, ErrDeadline) {
			t.Fatalf("got %v, want ErrDeadline", err)
		}
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	// A query with time to spare comes after the worker looked at the
	// queue again: once it is answered, the model saw all it ever will.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := d.Predict(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if n := m.inputs.Load(); n != 2 {
		t.Fatalf("model saw %d inputs, want only the first and the one after", n)
	}
	if d.Queued() != 0 {
		t.Fatalf("%d expired queries still queued", d.Queued())
	}
}

// slackLimited is a controller for the test: it takes a batch to need 4 s,
// so a head with less slack than that cannot make its deadline.
type slackLimited struct{}

func (slackLimited) BatchSize(slack, _ time.Duration) int {
	if slack >= 0 && slack < 4*time.Second {
		return 0
	}
	return 1
}

func (slackLimited) Observe(int, time.Duration) {}

func TestDoomedHeadsAreAnsweredAtOnce(t *testing.T) {
	m := &model{delay: 100 * time.Millisecond}
	d := startDispatcher(t, Options{MaxBatch: 1, NewController: func() Controller { return slackLimited{} }}, serve(t, m).addr)
	// The first query (no deadline) occupies the only replica for 100 ms.
	busy := occupy(t, d, m)
	// When the replica frees, a head with 3 s left cannot make it by the
	// controller's reckoning: it is answered then, not at its deadline.
	doomed, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _, err := d.Predict(doomed, []byte("doomed"))
	if !errors.Is(err, ErrDoomed) || !errors.Is(err, ErrDeadline) {
		t.Fatalf("doomed query: %v, want ErrDoomed, which is ErrDeadline too", err)
	}
	if doomed.Err() != nil {
		t.Fatal("the doomed query was answered at its deadline, not when it reached the head")
	}
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	// One with time to spare is sent.
	later, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, _, err := d.Predict(later, []byte("later")); err != nil {
		t.Fatalf("a query with time to spare: %v", err)
	}
	if n := m.inputs.Load(); n != 2 {
		t.Fatalf("model saw %d inputs, want 2: the doomed query must not reach it", n)
	}
}

// overruns records what a dispatcher tells a controller or a governor:
// the sizes of batches observed and of batches abandoned past their
// deadlines, with how long each had taken.
type overruns struct {
	mu       sync.Mutex
	observed []int
	overrun  []int
	atLeast  []time.Duration
}

func (o *overruns) BatchSize(time.Duration, time.Duration) int { return 4 }

func (o *overruns) Observe(n int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.observed = append(o.observed, n)
}

// governed is overruns as a Governor: what Ended is told.
type governed struct {
	spacer
	*overruns
}

func (g governed) Ended(n int, _ time.Time, latency time.Duration, how Outcome) {
	switch how {
	case Answered:
		g.Observe(n, latency)
	case Overran:
		g.ObserveOverrun(n, latency)
	}
}

func (o *overruns) ObserveOverrun(n int, atLeast time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.overrun, o.atLeast = append(o.overrun, n), append(o.atLeast, atLeast)
}

func TestOverrunBatchesAreToldToTheLearners(t *testing.T) {
	ctrl, est := &overruns{}, &overruns{}
	m := &model{delay: 300 * time.Millisecond}
	d := startDispatcher(t, Options{MaxBatch: 64, NewController: func() Controller { return ctrl },
		Governor: governed{overruns: est}}, serve(t, m).addr)
	// A query with 50ms to its deadline, which the model takes 300ms
	// over: the dispatcher abandons its batch at the deadline.
	if _, errs := stream(d, 1, 1, 50*time.Millisecond, 0); len(errs) != 1 || !errors.Is(errs[0], ErrDeadline) {
		t.Fatalf("errors %v, want ErrDeadline (the model answers after the deadline)", errs)
	}
	testutil.Eventually(t, 5*time.Second, "the controller and the governor to be told of the abandoned batch", func() bool {
		ctrl.mu.Lock()
		defer ctrl.mu.Unlock()
		est.mu.Lock()
		defer est.mu.Unlock()
		return len(ctrl.overrun) > 0 && len(est.overrun) > 0
	})
	for _, o := range []*overruns{ctrl, est} {
		o.mu.Lock()
		if len(o.observed) != 0 || !slices.Equal(o.overrun, []int{1}) {
			t.Errorf("told of answered batches %v and overruns %v; want one overrun of 1 and no answer", o.observed, o.overrun)
		}
		if o.atLeast[0] <= 0 || o.atLeast[0] >= m.delay {
			t.Errorf("an overrun after %v; want it between the send and the model's answer, %v later", o.atLeast[0], m.delay)
		}
		o.mu.Unlock()
	}
}

func TestDeadReplicaInFlightRetriedElsewhere(t *testing.T) {
	slowModel := &model{delay: 50 * time.Millisecond}
	busy := slowModel.first()
	slow := serve(t, slowModel)
	fast := serve(t, &model{delay: time.Millisecond})
	d := startDispatcher(t, Options{MaxBatch: 4}, slow.addr, fast.addr)
	done := make(chan struct{})
	var errs []error
	var answers map[string]int
	go func() {
		defer close(done)
		answers, errs = stream(d, 300, 8, 2*time.Second, time.Millisecond)
	}()
	select { // the slow replica has a batch in flight
	case <-busy:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow replica got no batch within 10 s")
	}
	slow.stop() // kills its connections with batches in flight
	<-done
	if len(errs) > 0 {
		t.Fatalf("%d queries failed after a replica died, first: %v", len(errs), errs[0])
	}
	if answers[fast.addr] == 0 {
		t.Fatalf("answers %v", answers)
	}
	waitHealthy(t, d, 1)
}

// hung accepts connections, sends HELLO, then never reads or answers.
func hung(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_, _ = c.Write(rpc.AppendFrame(nil, &rpc.Hello{Version: rpc.Version, InputType: rpc.Bytes}))
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestUnresponsiveReplicaTakesNoWork(t *testing.T) {
	good := serve(t, &model{delay: time.Millisecond})
	stuck := hung(t)
	d := New(Options{InputType: rpc.Bytes, MaxBatch: 4, HeartbeatInterval: 20 * time.Millisecond, HeartbeatTimeout: 30 * time.Millisecond})
	d.Start(context.Background())
	defer d.Close()
	d.SetReplicas([]string{good.addr})
	waitHealthy(t, d, 1)
	// The stuck replica connects but never answers a PING, so it is never
	// admitted and every query goes to the good one within its deadline.
	d.SetReplicas([]string{good.addr, stuck})
	answers, errs := stream(d, 100, 4, time.Second, time.Millisecond)
	if len(errs) > 0 || answers[stuck] > 0 {
		t.Fatalf("errors %v, answers %v", errs, answers)
	}
	if _, h := d.Replicas(); h != 1 {
		t.Fatalf("%d healthy, want 1", h)
	}
}

func TestRemovedReplicaDrains(t *testing.T) {
	m := &model{delay: 30 * time.Millisecond}
	a := serve(t, m)
	b := serve(t, &model{})
	d := startDispatcher(t, Options{MaxBatch: 1}, a.addr)
	res := occupy(t, d, m)
	d.SetReplicas([]string{b.addr}) // a's batch in flight still answers
	if err := <-res; err != nil {
		t.Fatalf("query in flight on a removed replica: %v", err)
	}
	waitHealthy(t, d, 1)
}

func TestCloseAnswersQueued(t *testing.T) {
	d := New(Options{InputType: rpc.Bytes})
	d.Start(context.Background())
	res := make(chan error, 1)
	go func() {
		_, _, err := d.Predict(context.Background(), []byte("x"))
		res <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the query to be queued", func() bool { return d.Queued() > 0 })
	d.Close()
	if err := <-res; !errors.Is(err, ErrStopped) {
		t.Fatalf("got %v, want ErrStopped", err)
	}
	if _, _, err := d.Predict(context.Background(), []byte("y")); !errors.Is(err, ErrStopped) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestBatchesFitTheContainersFrame: batches are cut to the container's
// frame limit, and an input too large alone fails alone without ejecting
// the replica.
func TestBatchesFitTheContainersFrame(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &model{delay: 5 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rpc.NewServer(m, rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.Bytes, MaxFrame: 1024}}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	d := startDispatcher(t, Options{MaxBatch: 64}, ln.Addr().String())

	// 300-byte inputs: 22 + 3×304 = 934 bytes fit a 1024-byte frame, 4 do not.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 40 {
		wg.Go(func() {
			qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer qcancel()
			if _, _, err := d.Predict(qctx, make([]byte, 300)); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 || m.inputs.Load() != 40 {
		t.Fatalf("%d failed, %d computed; want all 40 answered", failed.Load(), m.inputs.Load())
	}
	if m.biggest > 3 {
		t.Errorf("largest batch %d, want at most 3 (the frame limit)", m.biggest)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer qcancel()
	if _, _, err := d.Predict(qctx, make([]byte, 2000)); !rpc.IsCode(err, rpc.FrameTooLarge) {
		t.Fatalf("an input over the frame limit: %v, want FRAME_TOO_LARGE", err)
	}
	if _, h := d.Replicas(); h != 1 {
		t.Errorf("%d healthy replicas after the refusal, want 1", h)
	}
}
