package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

// Controller chooses the batch sizes of one replica. Package slo's adaptive
// controllers implement it; Static is the fixed-size one.
type Controller interface {
	// BatchSize is the most queries the next batch may hold, given the
	// time left until the earliest deadline in the queue (slack) and that
	// query's whole budget, its deadline less its arrival (slo); either is
	// negative when the head query has no deadline. 0 says that the head
	// cannot make its deadline even alone: the dispatcher answers it at
	// once (ErrDoomed) rather than spend a batch on it, and asks again
	// for the next head.
	BatchSize(slack, slo time.Duration) int
	// Observe records that a batch of n queries took latency to answer;
	// a batch abandoned unanswered is told to an OverrunObserver instead.
	Observe(n int, latency time.Duration)
}

// OverrunObserver is implemented by controllers and estimators that learn
// from a batch abandoned because it outlived the latest deadline of its
// queries (the container's answer would come too late for every one of
// them): it took at least atLeast, how much longer no one knows. Such
// batches are the slowest of all; a learner that is told only of answered
// batches sees its worst misses never.
type OverrunObserver interface {
	ObserveOverrun(n int, atLeast time.Duration)
}

// laneAware is implemented by controllers whose sizes depend on how long a
// query waits for a batch to start. Before each choice the dispatcher
// tells them over how many lanes (replica slots) it staggers batch starts,
// 1 when it does not, and the typical batch's service time, the moving
// average by which the pacer spaces the starts (0 before the first; see
// pacer).
type laneAware interface {
	SetLanes(lanes int, typical time.Duration)
}

// NoLimit is the size a Controller chooses when it sets no limit of its
// own: the dispatcher's and the container's limits still apply.
const NoLimit = 1 << 30

// Static is a Controller that always chooses the same size.
type Static int

// BatchSize implements Controller.
func (s Static) BatchSize(time.Duration, time.Duration) int { return int(s) }

// Observe implements Controller.
func (Static) Observe(int, time.Duration) {}

var _ Controller = Static(1)

// Estimator predicts how long batches take, learning from every batch of
// the model version; admission reads it (package slo's Fit implements it).
type Estimator interface {
	// Observe records that a batch of n queries took latency.
	Observe(n int, latency time.Duration)
	// Estimate is how long a batch of n queries typically takes, and the
	// extra delay to plan for once per query (a high quantile). Before any
	// observation both are 0.
	Estimate(n int) (typical, tail time.Duration)
}

// Options configure a Dispatcher. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Model and Version name the model version, for logs and metrics.
	Model, Version string
	// InputType is the type of every input.
	InputType rpc.InputType
	// MaxBatch caps every batch (the container's HELLO may cap it further).
	// 0 means 64.
	MaxBatch int
	// Slots is how many batches one replica has in flight at once; a
	// second slot hides the network round trip behind computation. 0 means 1.
	Slots int
	// NewController makes a replica's batch-size controller. nil means
	// Static(MaxBatch).
	NewController func() Controller
	// NewEstimator makes the model version's latency estimator. With one,
	// Predict sheds (ErrShed) a query whose predicted finish is past its
	// deadline, before queueing it; nil means no admission control: every
	// query waits until its deadline.
	NewEstimator func() Estimator
	// Pace staggers the replicas' batch starts (see pacer); SetPace
	// changes it.
	Pace bool
	// HeartbeatInterval is the time between PINGs to each replica, and
	// HeartbeatTimeout how long one may take; two failures in a row eject
	// the replica. 0 means 500 ms and 1 s.
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// MaxAttempts bounds how often one query is sent after its replica
	// failed. 0 means 3.
	MaxAttempts int
	// Client configures the RPC clients.
	Client rpc.ClientOptions
	// Metrics, when set, receives queue-wait, batch-size and replica-health
	// observations.
	Metrics *Metrics
	// Logger receives replica events. nil means no logs.
	Logger *zap.Logger
	// Now is the clock. nil means time.Now.
	Now func() time.Time
}

// Dispatcher is the queue of one model version and the workers of its
// replicas.
type Dispatcher struct {
	opts    Options
	name    string // model:version
	metrics *versionMetrics
	q       *queue
	est     atomic.Pointer[estimator] // nil: no admission control
	pacing  atomic.Bool
	pace    pacer
	healthy atomic.Int32
	ctx     context.Context

	mu       sync.Mutex // guards replicas and closed
	replicas map[string]*replica
	closed   bool
	wg       sync.WaitGroup
}

// New returns a dispatcher with no replicas. Start it before use.
func New(opts Options) *Dispatcher {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.Slots <= 0 {
		opts.Slots = 1
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 500 * time.Millisecond
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.Client.Logger = opts.Logger
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Logger = opts.Logger.With(zap.String("model", opts.Model), zap.String("version", opts.Version))
	d := &Dispatcher{opts: opts, name: opts.Model + ":" + opts.Version, metrics: opts.Metrics.forVersion(opts.Model, opts.Version),
		q: newQueue(opts.Now), replicas: map[string]*replica{}}
	d.SetBatching(opts.NewController, opts.NewEstimator)
	d.SetPace(opts.Pace)
	return d
}

// Name is the model version as "model:version".
func (d *Dispatcher) Name() string { return d.name }

// Start makes the dispatcher ready for replicas; ctx bounds their lives.
func (d *Dispatcher) Start(ctx context.Context) { d.ctx = ctx }

// SetReplicas starts workers for new addresses and drains removed ones: a
// removed replica takes no more work and is closed once its batches in
// flight are answered.
func (d *Dispatcher) SetReplicas(addrs []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for addr, r := range d.replicas {
		if !slices.Contains(addrs, addr) {
			delete(d.replicas, addr)
			r.stop()
		}
	}
	for _, addr := range addrs {
		if _, ok := d.replicas[addr]; ok {
			continue
		}
		r := newReplica(d, addr)
		d.replicas[addr] = r
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			r.run(d.ctx)
		}()
	}
}

// SetBatching replaces the replicas' controllers and the admission
// estimator with new ones from the factories (see Options.NewController
// and Options.NewEstimator for what nil means): what a configuration
// reload that changed the model version's batching applies. Batches in
// flight report to the controllers they were sized by.
func (d *Dispatcher) SetBatching(newController func() Controller, newEstimator func() Estimator) {
	if newController == nil {
		n := d.opts.MaxBatch
		newController = func() Controller { return Static(n) }
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opts.NewController = newController
	for _, r := range d.replicas {
		r.ctrlMu.Lock()
		r.ctrl = newController()
		r.ctrlMu.Unlock()
	}
	if newEstimator == nil {
		d.est.Store(nil)
		return
	}
	d.est.Store(&estimator{Estimator: newEstimator()})
}

// SetPace turns the staggering of batch starts on or off.
func (d *Dispatcher) SetPace(on bool) { d.pacing.Store(on) }

// lanes is over how many worker slots batch starts are staggered: all the
// healthy replicas' while pacing, else 1.
func (d *Dispatcher) lanes() int {
	if !d.pacing.Load() {
		return 1
	}
	return max(1, int(d.healthy.Load())*d.opts.Slots)
}

// spacing is how batch starts are staggered: over how many lanes, and
// the typical service time by which the pacer spaces them.
type spacing struct {
	lanes   int
	typical time.Duration
}

// spacing reads the lanes and the pacer's typical service time, once for
// every controller a choice asks.
func (d *Dispatcher) spacing() spacing {
	return spacing{lanes: d.lanes(), typical: d.pace.typical()}
}

// batchSizeOf asks c for a size, telling it the spacing first; called
// with the controller's replica's ctrlMu held.
func (d *Dispatcher) batchSizeOf(c Controller, sp spacing, slack, slo time.Duration) int {
	if la, ok := c.(laneAware); ok {
		la.SetLanes(sp.lanes, sp.typical)
	}
	return c.BatchSize(slack, slo)
}

// hold is how long a free worker waits before taking a batch of up to n
// (see pacer).
func (d *Dispatcher) hold(n int) time.Duration {
	if !d.pacing.Load() {
		return 0
	}
	_, slack, _ := d.q.head()
	return d.pace.hold(d.opts.Now(), d.lanes(), n, d.q.len(), slack)
}

// Estimator returns the version's current estimator, nil when admission is
// off.
func (d *Dispatcher) Estimator() Estimator {
	if e := d.est.Load(); e != nil {
		return e.Estimator
	}
	return nil
}

// estimator boxes an Estimator for an atomic pointer, with admission's
// calibration, which a new estimator starts afresh.
type estimator struct {
	Estimator
	cal calibration
}

// Replicas returns the replicas' addresses and how many are healthy.
func (d *Dispatcher) Replicas() (addrs []string, healthy int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for addr, r := range d.replicas {
		addrs = append(addrs, addr)
		if r.isHealthy() {
			healthy++
		}
	}
	slices.Sort(addrs)
	return addrs, healthy
}

// Queued is the number of queries waiting for a replica.
func (d *Dispatcher) Queued() int { return d.q.len() }

// Close stops every replica after its batches in flight, and answers the
// queries still queued with ErrStopped.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	for _, r := range d.replicas {
		r.stop()
	}
	d.mu.Unlock()
	d.wg.Wait()
	d.q.stop(ErrStopped)
}

// Predict queues input and waits for a replica's answer. It returns when the
// answer comes, when ctx is done (ErrDeadline at ctx's deadline, else ctx's
// error), or when the dispatcher closes (ErrStopped). With an estimator, a
// query predicted to miss its deadline is refused at once with an error
// that wraps ErrShed. Item errors from the model come back as a
// *ModelError. The answer names the replica.
func (d *Dispatcher) Predict(ctx context.Context, input []byte) (out []byte, replica string, err error) {
	q := &query{ctx: ctx, input: input, enqueued: d.opts.Now(), reply: make(chan result, 1)}
	q.deadline, _ = ctx.Deadline()
	if est := d.est.Load(); est != nil && !q.deadline.IsZero() {
		if err := d.admit(est, q, reserveOf(ctx)); err != nil {
			return nil, "", err
		}
	}
	if err := d.q.push(q); err != nil {
		return nil, "", err
	}
	select {
	case r := <-q.reply:
		if r.err != nil {
			if errors.Is(r.err, ErrDeadline) { // expired in the queue, or refused as doomed
				q.calibrate(d.opts.Now, q.deadline, true)
			}
			return nil, r.replica, r.err
		}
		q.calibrate(d.opts.Now, time.Time{}, false)
		if r.out.Err != "" {
			return nil, r.replica, &ModelError{Model: d.opts.Model, Version: d.opts.Version, Message: r.out.Err}
		}
		return r.out.Data, r.replica, nil
	case <-ctx.Done():
		d.q.remove(q)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			q.calibrate(d.opts.Now, q.deadline, true)
			return nil, "", ErrDeadline
		}
		return nil, "", ctx.Err()
	}
}

// ModelError is a model's own failure for one input.
type ModelError struct {
	Model, Version, Message string
}

func (e *ModelError) Error() string {
	return fmt.Sprintf("model %s version %s failed: %s", e.Model, e.Version, e.Message)
}
