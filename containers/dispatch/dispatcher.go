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

// Controller chooses the batch sizes of one replica. Package slo's
// controllers implement it.
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

// OverrunObserver is implemented by controllers that learn from a batch
// abandoned because it outlived the latest deadline of its queries (the
// container's answer would come too late for every one of them): it took
// at least atLeast, how much longer no one knows. Such batches are the
// slowest of all; a learner that is told only of answered batches sees
// its worst misses never. A Governor is told of them by Ended (Overran).
type OverrunObserver interface {
	ObserveOverrun(n int, atLeast time.Duration)
}

// laneAware is implemented by controllers whose sizes depend on how long a
// query waits for a batch to start. Before each choice the dispatcher
// tells them what the Governor's Spacing says: over how many lanes
// (replica slots) batch starts are staggered, 1 when they are not, and
// the typical batch's service time (0 before the first).
type laneAware interface {
	SetLanes(lanes int, typical time.Duration)
}

// NoLimit is the size a Controller chooses when it sets no limit of its
// own: the dispatcher's and the container's limits still apply.
const NoLimit = 1 << 30

// unlimited is the Controller of a dispatcher given none: every batch
// takes up to MaxBatch.
type unlimited struct{}

func (unlimited) BatchSize(time.Duration, time.Duration) int { return NoLimit }
func (unlimited) Observe(int, time.Duration)                 {}

// Governor decides, for the whole model version, what the dispatcher does
// about time beyond each replica's batch size: which queries may queue,
// when a free worker takes its batch, and it learns from every batch.
// Package slo's Governor implements it.
type Governor interface {
	Admitter
	Pacer
	BatchObserver
}

// Admitter decides whether a query may join the queue.
type Admitter interface {
	// Admit refuses a with an error wrapping ErrShed, or admits it with
	// a prediction of its finish (the zero Prediction: none).
	Admit(a Arrival) (Prediction, error)
	// Finished tells the Admitter that a query it admitted with
	// prediction p finished at now: answered, or past its deadline
	// (expired: ErrDeadline, or refused as doomed). Under a Delivery,
	// now is when the caller delivered the answer.
	Finished(p Prediction, now time.Time, expired bool)
}

// Arrival is what an Admitter is told of a query about to queue.
type Arrival struct {
	Model             string    // the model version, "model:version", for errors
	Arrived, Deadline time.Time // Deadline is never zero: a query without one is admitted unasked
	Reserve           time.Duration
	Queued            int // queries already queued
	Replicas, Slots   int // healthy replicas, and the batches each has in flight at once
	// Sizes tells the batch size the replicas take when queries wait.
	Sizes BatchSizer
}

// BatchSizer tells the batch size a version's replicas take when queries
// wait (the Dispatcher).
type BatchSizer interface {
	BatchSize(budget time.Duration) int
}

// Prediction is an Admitter's forecast for a query it admitted, handed
// back to it by Finished.
type Prediction struct {
	Arrived, Deadline time.Time
	Finish            time.Duration // after Arrived
	// Batch is the batch the query is to ride, counting the batches that
	// start after it arrives: 1st, 2nd, ...; 0: no prediction. A batch
	// takes, past its controller's size, the queries admitted to ride it.
	Batch int
}

// Pacer decides when a free worker takes its batch.
type Pacer interface {
	// Hold is how long a free worker waits before taking a batch of up to
	// n from queued queries, of which the head has slack left (negative:
	// no deadline), when workers worker slots serve the version.
	Hold(now time.Time, workers, n, queued int, slack time.Duration) time.Duration
	// Spacing is what lane-aware controllers are told (see laneAware).
	Spacing(workers int) (lanes int, typical time.Duration)
}

// BatchObserver learns from the version's batches.
type BatchObserver interface {
	// Started records that a batch of n left at now and returns when it
	// is expected to end, the key Ended takes.
	Started(now time.Time, n int) (end time.Time)
	// Ended records how the batch expected to end at end ended, after
	// latency.
	Ended(n int, end time.Time, latency time.Duration, how Outcome)
}

// Outcome is how a batch ended.
type Outcome int

// The outcomes of a batch.
const (
	// Answered: the replica answered it.
	Answered Outcome = iota
	// Overran: abandoned because it outlived the latest deadline of its
	// queries (see OverrunObserver).
	Overran
	// Failed: the replica failed it or was lost.
	Failed
)

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
	// batches of up to MaxBatch.
	NewController func() Controller
	// Governor admits queries and paces the replicas' batches. nil means
	// neither: every query waits until its deadline, and a free worker
	// takes its batch at once.
	Governor Governor
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
	// BackgroundIdle is how long after the latest query with a deadline
	// a batch of background queries (see Background) is still sized for
	// such queries' SLO; after it, with no online query in sight, it
	// takes up to MaxBatch. 0 means 5 s.
	BackgroundIdle time.Duration
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
	gov     atomic.Pointer[governor] // nil: no admission, no pacing
	healthy atomic.Int32
	counts  struct{ arrived, shed, answered atomic.Uint64 } // see Counts
	ctx     context.Context
	online  onlineSeen // the latest query with a deadline, for background batches

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
	if opts.BackgroundIdle <= 0 {
		opts.BackgroundIdle = 5 * time.Second
	}
	opts.Logger = opts.Logger.With(zap.String("model", opts.Model), zap.String("version", opts.Version))
	d := &Dispatcher{opts: opts, name: opts.Model + ":" + opts.Version, metrics: opts.Metrics.forVersion(opts.Model, opts.Version),
		q: newQueue(opts.Now), replicas: map[string]*replica{}}
	d.SetBatching(opts.NewController, opts.Governor)
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

// SetBatching replaces the replicas' controllers with new ones from the
// factory and the governor (see Options.NewController and
// Options.Governor for what nil means): what a configuration reload that
// changed the model version's batching applies. Batches in flight report
// to the controllers and governor they were sized by.
func (d *Dispatcher) SetBatching(newController func() Controller, gov Governor) {
	if newController == nil {
		newController = func() Controller { return unlimited{} }
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opts.NewController = newController
	for _, r := range d.replicas {
		r.ctrlMu.Lock()
		r.ctrl = newController()
		r.ctrlMu.Unlock()
	}
	if gov == nil {
		d.gov.Store(nil)
		return
	}
	d.gov.Store(&governor{gov})
}

// governor boxes a Governor for an atomic pointer.
type governor struct{ Governor }

// workers is how many worker slots the healthy replicas have.
func (d *Dispatcher) workers() int { return int(d.healthy.Load()) * d.opts.Slots }

// spacing is what lane-aware controllers are told: the governor's
// spacing, or one lane and no typical batch without a governor.
type spacing struct {
	lanes   int
	typical time.Duration
}

// spacing asks the governor once for every controller a choice asks.
func (d *Dispatcher) spacing() spacing {
	if g := d.gov.Load(); g != nil {
		lanes, typical := g.Spacing(d.workers())
		return spacing{lanes: lanes, typical: typical}
	}
	return spacing{lanes: 1}
}

// batchSizeOf asks c for a size, telling it the spacing first; called
// with the controller's replica's ctrlMu held.
func (d *Dispatcher) batchSizeOf(c Controller, sp spacing, slack, slo time.Duration) int {
	if la, ok := c.(laneAware); ok {
		la.SetLanes(sp.lanes, sp.typical)
	}
	return c.BatchSize(slack, slo)
}

// BatchSize is the smallest batch the healthy replicas' controllers would
// send to queries of this budget with no deadline yet pressing, within
// MaxBatch and at least 1: the size the replicas take when queries wait
// (BatchSizer, for admission).
func (d *Dispatcher) BatchSize(budget time.Duration) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := NoLimit
	sp := d.spacing()
	for _, r := range d.replicas {
		if r.isHealthy() {
			r.ctrlMu.Lock()
			n = min(n, d.batchSizeOf(r.ctrl, sp, -1, budget))
			r.ctrlMu.Unlock()
		}
	}
	return max(1, min(d.opts.MaxBatch, n))
}

// hold is how long a free worker waits before taking a batch of up to n,
// as the governor paces the replicas. A batch that background queries
// lead while online queries come is paced as a batch of one online query
// would be (the queue counts one): background queries keep every replica
// busy, and only starts staggered over the replicas bound the wait of the
// next online query to a share of a batch rather than a whole one.
func (d *Dispatcher) hold(n int) time.Duration {
	g := d.gov.Load()
	if g == nil {
		return 0
	}
	head, slack, _, _, queued := d.q.head()
	if head != nil && head.background && d.onlineRecent() {
		queued = 1
	}
	return g.Hold(d.opts.Now(), d.workers(), n, queued, slack)
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

// Counts are a dispatcher's query counts since it was made: what the
// autoscaler reads as demand, and cost divides by.
type Counts struct {
	// Arrived counts the online queries Predict was asked (background
	// ones are no demand to scale for), Shed those admission refused,
	// Answered those a replica answered with an output, background ones
	// included.
	Arrived, Shed, Answered uint64
}

// Counts returns the query counts so far.
func (d *Dispatcher) Counts() Counts {
	return Counts{Arrived: d.counts.arrived.Load(), Shed: d.counts.shed.Load(), Answered: d.counts.answered.Load()}
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

// Predict queues input and waits for a replica's answer; a background
// context (see Background) makes it a query of the lowest priority class.
// It returns when the
// answer comes, when ctx is done (ErrDeadline at ctx's deadline, else ctx's
// error), or when the dispatcher closes (ErrStopped). With a governor, a
// query predicted to miss its deadline is refused at once with an error
// that wraps ErrShed. Item errors from the model come back as a
// *ModelError. The answer names the replica.
func (d *Dispatcher) Predict(ctx context.Context, input []byte) (out []byte, replica string, err error) {
	q := &query{ctx: ctx, input: input, enqueued: d.opts.Now(), reply: make(chan result, 1)}
	if q.background = isBackground(ctx); !q.background {
		q.deadline, _ = ctx.Deadline()
		d.online.saw(q)
		d.counts.arrived.Add(1)
	}
	if err := d.admit(q); err != nil {
		return nil, "", err
	}
	if err := d.q.push(q); err != nil {
		return nil, "", err
	}
	select {
	case r := <-q.reply:
		if r.err != nil {
			if errors.Is(r.err, ErrDeadline) { // expired in the queue, or refused as doomed
				d.finished(q, true)
			}
			return nil, r.replica, r.err
		}
		d.finished(q, false)
		if r.out.Err != "" {
			return nil, r.replica, &ModelError{Model: d.opts.Model, Version: d.opts.Version, Message: r.out.Err}
		}
		d.counts.answered.Add(1)
		return r.out.Data, r.replica, nil
	case <-ctx.Done():
		d.q.remove(q)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			d.finished(q, true)
			return nil, "", ErrDeadline
		}
		return nil, "", ctx.Err()
	}
}

// ErrShed is wrapped by the error Predict returns for a query the
// governor refused because it was predicted to miss its deadline.
var ErrShed = errors.New("shed: would miss SLO")

type reserveKey struct{}

// WithReserve returns a context whose queries the governor sheds unless
// they are predicted to finish reserve before their deadline: how lower
// priority classes give way first as the queue grows.
func WithReserve(ctx context.Context, reserve time.Duration) context.Context {
	if reserve <= 0 {
		return ctx
	}
	return context.WithValue(ctx, reserveKey{}, reserve)
}

func reserveOf(ctx context.Context) time.Duration {
	r, _ := ctx.Value(reserveKey{}).(time.Duration)
	return r
}

// admit asks the governor whether q, with a deadline, may queue, and
// keeps its prediction. With no governor, no healthy replica, an empty
// queue or no deadline, q is admitted unasked: there is nothing to
// predict from, and the deadline still bounds its wait. An empty queue
// admits whatever an estimate would say, so that batches keep coming to
// learn from even after a bad spell made the estimate pessimistic.
func (d *Dispatcher) admit(q *query) error {
	g := d.gov.Load()
	if g == nil || q.deadline.IsZero() {
		return nil
	}
	replicas := int(d.healthy.Load())
	queued, starts := d.q.pending()
	if replicas == 0 || queued == 0 {
		return nil
	}
	p, err := g.Admit(Arrival{Model: d.name, Arrived: q.enqueued, Deadline: q.deadline, Reserve: reserveOf(q.ctx),
		Queued: queued, Replicas: replicas, Slots: d.opts.Slots, Sizes: d})
	if err != nil {
		d.counts.shed.Add(1)
		if d.metrics != nil {
			d.metrics.shed.Inc()
		}
		return err
	}
	if p.Batch > 0 {
		q.admitter, q.prediction, q.due = g.Governor, p, starts+p.Batch
	}
	return nil
}

// finished tells the governor that admitted q with a prediction that q
// finished now, expired or answered, or leaves that to q's Delivery (see
// WithDelivery); a query admitted without one tells nothing (and does
// not read the clock).
func (d *Dispatcher) finished(q *query, expired bool) {
	if q.admitter != nil && !hold(q.ctx, q.admitter, q.prediction, expired) {
		q.admitter.Finished(q.prediction, d.opts.Now(), expired)
	}
}

// ModelError is a model's own failure for one input.
type ModelError struct {
	Model, Version, Message string
}

func (e *ModelError) Error() string {
	return fmt.Sprintf("model %s version %s failed: %s", e.Model, e.Version, e.Message)
}
