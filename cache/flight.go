package cache

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// flights are the computations in progress, one per key, each shared by
// the concurrent misses of its key.
//
// A flight runs in its own goroutine under a context that carries the
// deadline of the query that started it but not that query's
// cancellation: it ends when the computation returns, when that deadline
// passes, or when the last query waiting on it has left, whichever comes
// first. So a query whose client goes away takes its interest with it but
// never the answer of the others still waiting.
type flights struct {
	mu     sync.Mutex           // guards m, closed and each flight's waiters
	m      map[[16]byte]*flight // the flights that queries may still join
	closed bool                 // stop has begun: no flight starts
	wg     sync.WaitGroup       // the flights' goroutines
}

// flight is one computation and its outcome.
type flight struct {
	done    chan struct{} // closed once out, fromL1 and err are set
	out     []byte
	fromL1  bool
	err     error
	cancel  context.CancelFunc
	waiters int // the queries waiting on the flight; guarded by flights.mu
}

// Do returns k's output, computing it with compute when L1 does not have
// it. Concurrent calls for one key share one computation (see flights),
// which looks at L1 again first. Each caller returns at its own ctx's end
// at the latest, and leaving does not end the computation while another
// caller waits on it. A successful computation is Put for ttl; an error is
// returned to every caller still waiting and not cached. shared reports
// whether the output came from another caller's computation or from L1
// (and is what sloproxy_cache_collapsed_total counts).
func (c *Cache) Do(ctx context.Context, k Key, ttl time.Duration, compute func(context.Context) ([]byte, error)) (out []byte, shared bool, err error) {
	f, led := c.join(ctx, k, ttl, compute)
	if f == nil { // closing: computed alone, in the caller's goroutine, and not cached
		out, err := c.compute(ctx, compute)
		return out, false, err
	}
	if !led {
		c.m.flightWaiters.Inc()
		defer c.m.flightWaiters.Dec()
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		select {
		case <-f.done: // it ended as ctx did: its outcome is there to give
		default:
			c.leave(k, f)
			return nil, false, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, !led, f.err
	}
	shared = !led || f.fromL1
	if shared {
		c.m.collapsed.Inc()
	}
	return f.out, shared, nil
}

// join adds the caller to k's flight, starting one (led) if there is none;
// nil once stop has begun, when a new flight's goroutine could escape
// stop's wait.
func (c *Cache) join(ctx context.Context, k Key, ttl time.Duration, compute func(context.Context) ([]byte, error)) (f *flight, led bool) {
	fl := &c.flights
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return nil, false
	}
	if f := fl.m[k.Index]; f != nil {
		f.waiters++
		return f, false
	}
	var fctx context.Context
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); ok {
		fctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
	} else {
		fctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
	}
	f = &flight{done: make(chan struct{}), cancel: cancel, waiters: 1}
	if fl.m == nil {
		fl.m = map[[16]byte]*flight{}
	}
	fl.m[k.Index] = f
	fl.wg.Go(func() { c.fly(fctx, k, ttl, compute, f) })
	return f, true
}

// leave takes a caller that stopped waiting off f. The last one to leave
// ends the flight and removes it, so that a later miss starts afresh
// rather than joining a cancelled computation.
func (c *Cache) leave(k Key, f *flight) {
	fl := &c.flights
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if f.waiters--; f.waiters == 0 {
		f.cancel()
		if fl.m[k.Index] == f {
			delete(fl.m, k.Index)
		}
	}
}

// fly runs f's computation and publishes its outcome.
func (c *Cache) fly(ctx context.Context, k Key, ttl time.Duration, compute func(context.Context) ([]byte, error), f *flight) {
	defer f.cancel()
	if out, ok := c.getL1(k); ok {
		f.out, f.fromL1 = out, true
	} else if f.out, f.err = c.compute(ctx, compute); f.err == nil {
		c.Put(k, f.out, ttl)
	}
	fl := &c.flights
	fl.mu.Lock()
	if fl.m[k.Index] == f {
		delete(fl.m, k.Index)
	}
	fl.mu.Unlock()
	close(f.done)
}

// compute runs compute, turning a panic into an error for the callers: it
// runs in the flight's goroutine, where a panic would end the process.
func (c *Cache) compute(ctx context.Context, compute func(context.Context) ([]byte, error)) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("cache: a shared computation panicked", zap.Any("panic", r), zap.Stack("stack"))
			err = fmt.Errorf("cache: the computation panicked: %v", r)
		}
	}()
	return compute(ctx)
}

// stop cancels the flights in progress and waits for their goroutines;
// no flight starts after it has begun.
func (fl *flights) stop() {
	fl.mu.Lock()
	fl.closed = true
	for _, f := range fl.m {
		f.cancel()
	}
	fl.mu.Unlock()
	fl.wg.Wait()
}
