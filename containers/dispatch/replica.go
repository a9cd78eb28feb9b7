package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

// replica is one container of the model version: an RPC client, a
// heartbeat, and Slots workers that pull batches from the shared queue.
type replica struct {
	d      *Dispatcher
	addr   string
	client *rpc.Client
	log    *zap.Logger

	ctrlMu sync.Mutex // guards ctrl, which the workers share
	ctrl   Controller

	mu        sync.Mutex    // guards healthy, healthyCh, epoch and eject
	healthy   bool          // taking work
	healthyCh chan struct{} // closed while healthy
	epoch     context.Context
	eject     context.CancelFunc // cancels the batches in flight

	cancel  context.CancelFunc // stops taking work
	stopped chan struct{}
}

func newReplica(d *Dispatcher, addr string) *replica {
	r := &replica{
		d:         d,
		addr:      addr,
		client:    rpc.NewClient(addr, d.opts.Client),
		log:       d.opts.Logger.With(zap.String("replica", addr)),
		ctrl:      d.opts.NewController(), // d.mu is held: see SetReplicas
		healthyCh: make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	r.epoch, r.eject = context.WithCancel(context.Background())
	return r
}

// run serves until stop is called or ctx is done; batches in flight are
// answered before it returns.
func (r *replica) run(ctx context.Context) {
	defer close(r.stopped)
	ctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	defer cancel()
	r.client.Start(ctx)
	defer r.client.Close()
	if vm := r.d.metrics; vm != nil {
		// Last: a replica that is gone has no health series at all.
		defer vm.healthy.DeleteLabelValues(r.addr)
	}
	defer r.setHealthy(false, nil)

	var wg sync.WaitGroup
	for range r.d.opts.Slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx)
		}()
	}
	r.heartbeat(ctx)
	wg.Wait()
}

// stop makes the replica take no more work; run returns once its batches in
// flight are answered.
func (r *replica) stop() {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (r *replica) isHealthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.healthy
}

// setHealthy admits or ejects the replica. Ejecting cancels its batches in
// flight, whose queries go back to the queue.
func (r *replica) setHealthy(ok bool, why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.healthy == ok {
		return
	}
	r.healthy = ok
	if ok {
		r.d.healthy.Add(1)
	} else {
		r.d.healthy.Add(-1)
	}
	if ok {
		close(r.healthyCh)
		r.log.Info("replica ready")
	} else {
		r.healthyCh = make(chan struct{})
		r.eject()
		r.epoch, r.eject = context.WithCancel(context.Background())
		if why != nil {
			r.log.Warn("replica ejected", zap.Error(why))
		}
	}
	if vm := r.d.metrics; vm != nil {
		v := 0.0
		if ok {
			v = 1
		}
		vm.healthy.WithLabelValues(r.addr).Set(v)
	}
}

// waitHealthy waits until the replica takes work and returns the context of
// its current epoch.
func (r *replica) waitHealthy(ctx context.Context) (context.Context, error) {
	for {
		r.mu.Lock()
		ch, ok, epoch := r.healthyCh, r.healthy, r.epoch
		r.mu.Unlock()
		if ok {
			return epoch, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// heartbeat PINGs the replica: it admits the replica once connected and
// answering, and ejects it after two failures in a row or when its
// connection drops.
func (r *replica) heartbeat(ctx context.Context) {
	t := time.NewTicker(r.d.opts.HeartbeatInterval)
	defer t.Stop()
	fails := 0
	for {
		if !r.client.Connected() {
			r.setHealthy(false, rpc.ErrNotConnected)
			if _, err := r.client.WaitReady(ctx); err != nil {
				return
			}
		}
		pctx, cancel := context.WithTimeout(ctx, r.d.opts.HeartbeatTimeout)
		err := r.client.Ping(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			fails = 0
			r.setHealthy(true, nil)
		default:
			if fails++; fails >= 2 {
				r.setHealthy(false, err)
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// work pulls batches and sends them until ctx is done.
func (r *replica) work(ctx context.Context) {
	var batch []*query
	var inputs [][]byte
	var held *time.Timer
	defer func() {
		if held != nil {
			held.Stop()
		}
	}()
	for {
		epoch, err := r.waitHealthy(ctx)
		if err != nil {
			return
		}
		n, fill, limit, maxFrame, reason := r.limits()
		if wait := r.d.hold(n); wait > 0 {
			if held == nil {
				held = time.NewTimer(wait)
			} else {
				held.Reset(wait)
			}
			select {
			case <-held.C:
			case <-ctx.Done():
				return
			case <-epoch.Done():
			}
			continue // the head and the queue have moved on
		}
		batch, wake := r.d.q.take(n, limit, fill, maxFrame, batch[:0])
		if batch == nil {
			select {
			case <-wake:
			case <-ctx.Done():
				return
			case <-epoch.Done():
			}
			continue
		}
		if len(batch) < n {
			reason = releaseIdle
		}
		if vm := r.d.metrics; vm != nil {
			vm.release[reason].Inc()
		}
		inputs = r.send(epoch, batch, inputs[:0])
		clear(batch)
	}
}

// Why a batch left, the release reasons of the metrics.
const (
	releaseFull     = iota // it holds the size the controller chose
	releaseDeadline        // likewise, but the head's slack cut that size
	releaseIdle            // the queue had fewer queries: the replica was free
	releaseReasons
)

// limits asks the controller for the next batch's size, within the
// dispatcher's and the container's limits, and returns the container's
// frame limit, which bounds the batch's bytes, and why a batch of that size
// leaves (full or deadline). With background queries queued it also
// returns fill, the most the batch may hold once background queries join
// it (see Background): the controller's size is the steady state of the
// online queries' arrivals, which background queries must not stretch
// past what leaves the next online query its deadline.
//
// limit is the dispatcher's and the container's cap, up to which a batch
// takes the queries admitted to ride it (see queue.take).
func (r *replica) limits() (batch, fill, limit, maxFrame, reason int) {
	var slack, slo time.Duration
	var n int
	var head *query
	var background bool
	sp := r.d.spacing()
	for {
		head, slack, slo, background, _ = r.d.q.head()
		r.ctrlMu.Lock()
		n = r.d.batchSizeOf(r.ctrl, sp, slack, slo)
		r.ctrlMu.Unlock()
		if n > 0 || head == nil {
			break
		}
		// The head cannot make its deadline: answered now, it leaves the
		// replica free for queries that can, instead of taking a batch
		// of its own to miss anyway.
		r.d.q.refuse(head, &doomedError{model: r.d.name, left: slack})
	}
	fill = n
	if background {
		bg := r.d.backgroundSize(r, sp)
		if head != nil && head.background {
			n = bg
		}
		fill = min(n, bg)
	}
	limit, maxFrame = r.d.opts.MaxBatch, rpc.DefaultMaxFrame
	if h, ok := r.client.Hello(); ok {
		if h.MaxBatch > 0 {
			limit = min(limit, int(h.MaxBatch))
		}
		if h.MaxFrame > 0 {
			maxFrame = int(h.MaxFrame)
		}
	}
	reason = releaseFull
	if slack >= 0 && slack < slo/2 {
		reason = releaseDeadline
	}
	return max(1, min(n, limit)), max(1, min(fill, limit)), limit, maxFrame, reason
}

// send sends one batch and answers, requeues or fails its queries.
func (r *replica) send(epoch context.Context, batch []*query, inputs [][]byte) [][]byte {
	now := r.d.opts.Now()
	// The frame carries the latest deadline of the batch: the container
	// then computes as long as any query can still use the answer.
	var last time.Time
	for i, q := range batch {
		if q.deadline.IsZero() {
			last = time.Time{}
			break
		}
		if i == 0 || q.deadline.After(last) {
			last = q.deadline
		}
	}
	for _, q := range batch {
		inputs = append(inputs, q.input)
	}
	ctx := epoch
	if !last.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(epoch, last)
		defer cancel()
	}
	if vm := r.d.metrics; vm != nil {
		vm.observeBatch(batch, now)
	}
	gov, end := r.d.gov.Load(), now
	if gov != nil {
		end = gov.Started(now, len(batch))
	}
	outs, err := r.client.Predict(ctx, r.d.opts.InputType, inputs)
	latency := r.d.opts.Now().Sub(now)
	if gov != nil {
		gov.Ended(len(batch), end, latency, outcomeOf(err))
	}
	switch {
	case err == nil:
		r.observe(len(batch), latency, true)
		if vm := r.d.metrics; vm != nil {
			vm.service.Observe(latency.Seconds())
		}
		for i, q := range batch {
			q.reply <- result{out: outs[i], replica: r.addr}
		}
	case errors.Is(err, context.DeadlineExceeded):
		r.observe(len(batch), latency, false)
		for _, q := range batch {
			q.reply <- result{err: ErrDeadline, replica: r.addr}
		}
	case retryable(err, epoch):
		if !errors.Is(err, context.Canceled) {
			r.setHealthy(false, err)
		}
		for _, q := range batch {
			r.requeue(q, err)
		}
	default:
		// A model that fails a whole batch (the contract sends MODEL_ERROR
		// for a one-item batch) failed each of its inputs: item errors.
		var rerr *rpc.Error
		res := result{err: err, replica: r.addr}
		if errors.As(err, &rerr) && rerr.Code == rpc.ModelError {
			res = result{out: rpc.Output{Err: rerr.Message}, replica: r.addr}
		}
		for _, q := range batch {
			q.reply <- res
		}
	}
	return inputs
}

// observe tells the replica's controller that a batch of n was answered
// after latency or, not answered, abandoned after it past its queries'
// deadlines: ObserveOverrun then, if the controller implements
// OverrunObserver.
func (r *replica) observe(n int, latency time.Duration, answered bool) {
	r.ctrlMu.Lock()
	defer r.ctrlMu.Unlock()
	if answered {
		r.ctrl.Observe(n, latency)
	} else if o, ok := r.ctrl.(OverrunObserver); ok {
		o.ObserveOverrun(n, latency)
	}
}

// outcomeOf is how a batch whose Predict returned err ended.
func outcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return Answered
	case errors.Is(err, context.DeadlineExceeded):
		return Overran
	}
	return Failed
}

// retryable reports whether a failed batch may go to another replica: the
// container never got it, the connection broke, it was overloaded, or the
// replica was ejected while the batch was in flight.
func retryable(err error, epoch context.Context) bool {
	return errors.Is(err, rpc.ErrNotConnected) || errors.Is(err, rpc.ErrConnLost) || errors.Is(err, rpc.ErrClosed) ||
		rpc.IsCode(err, rpc.Overloaded) || (errors.Is(err, context.Canceled) && epoch.Err() != nil)
}

// requeue puts q back in the queue, unless it has been tried too often.
func (r *replica) requeue(q *query, why error) {
	q.attempts++
	if q.attempts >= r.d.opts.MaxAttempts {
		q.reply <- result{err: why, replica: r.addr}
		return
	}
	if err := r.d.q.push(q); err != nil {
		q.reply <- result{err: err}
	}
}
