// Package cache is the prediction cache: model versions' outputs by input,
// in an in-process L1 bounded by bytes in front of an L2 in Redis that
// every proxy sharing the Redis reads and fills.
//
// # Levels
//
// L1 is an otter cache (github.com/maypok86/otter/v2): concurrent, bounded
// by the bytes of its entries rather than their count, with W-TinyLFU
// admission and eviction (better hit rates than plain LRU under scans) and
// a time-to-live per entry. L2 is Redis through go-redis: one key per
// entry under Options.Prefix, with the app's TTL, holding a compact binary
// value (a format byte, the key's check hash, the output bytes).
//
// A batch of queries looks up L1 (Get), then all its L1 misses in one
// MGET (Fetch); on a Redis Cluster, whose keys spread over its masters by
// slot, one pipeline of GETs that go-redis splits by master. An L2 hit is copied into L1. Fills go into L1 at once and to Redis in the
// background, pipelined, so that no answer waits on a Redis write.
//
// # Redis trouble
//
// Every Redis call is bounded by Options.Timeout and by the query's own
// deadline. Failures feed a circuit breaker (github.com/sony/gobreaker/v2):
// after Options.BreakerFailures failures in a row it opens, and L2 is
// skipped entirely until a trial call after Options.BreakerCooldown
// succeeds. So Redis being slow or down costs the hit rate of L2, never a
// failed query or one answered late.
//
// # Collapsing
//
// Do runs one computation (a flight) for concurrent misses of the same
// key, looking at L1 again inside the flight, so that a burst of identical
// queries reaches the model once. Each waiter still leaves at its own
// deadline, and a flight lives until its computation ends, its deadline
// (its first query's) passes, or the last query waiting on it has left:
// the client of the query that started it going away does not fail the
// others.
//
// Only outputs are cached: the proxy never puts default outputs, errors or
// shed answers here.
package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/writeback"
)

// Defaults of Options' fields.
const (
	DefaultL1Bytes         = 256 << 20
	DefaultTTL             = 10 * time.Minute
	DefaultTimeout         = 5 * time.Millisecond
	DefaultBreakerFailures = 3
	DefaultBreakerCooldown = time.Second
	// fillQueue bounds the fills waiting to be written to Redis; beyond
	// it fills are dropped (and counted), never waited for.
	fillQueue = 4096
	// fillBatch is the most SETs in one pipeline.
	fillBatch = 128
	// writeTimeout is the least time a pipeline of fills gets.
	writeTimeout = 250 * time.Millisecond
	// drainTimeout bounds the writing of what is queued at Close.
	drainTimeout = time.Second
)

// Options configure a Cache. The zero value of each field has the meaning
// its comment gives.
type Options struct {
	// L1Bytes bounds the bytes of L1's entries (outputs and their keys).
	// 0 means DefaultL1Bytes.
	L1Bytes int64
	// Redis is the L2. nil means L1 only. Build it with
	// ContextTimeoutEnabled: without it go-redis ignores the deadlines the
	// cache sets and a stalled Redis holds a lookup for go-redis's own read
	// timeout.
	Redis redis.UniversalClient
	// Prefix starts every Redis key and channel of the cache.
	Prefix string
	// DefaultTTL is the TTL of entries put with none. 0 means DefaultTTL.
	DefaultTTL time.Duration
	// Timeout bounds each Redis lookup. Background writes get ten times as
	// long, and at least 250 ms. 0 means DefaultTimeout.
	Timeout time.Duration
	// BreakerFailures is how many Redis failures in a row open the
	// breaker; BreakerCooldown how long it stays open before a trial
	// call. 0 means DefaultBreakerFailures and DefaultBreakerCooldown.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Registerer receives the cache's metrics. nil means none.
	Registerer prometheus.Registerer
	// Logger receives the breaker's state changes and purges. nil means
	// none.
	Logger *zap.Logger
}

// Hit says where a lookup found its key.
type Hit uint8

// The levels a lookup can hit.
const (
	Miss Hit = iota
	L1
	L2
)

// entry is an L1 value.
type entry struct {
	check          uint64
	model, version string
	out            []byte
	ttl            time.Duration
}

// entryOverhead is what an L1 entry holds besides its output and names:
// the entry, otter's node with its expiry, and the key in otter's table,
// as TestL1WeightIsItsHeap measures, so that l1_bytes bounds the heap the
// entries take.
const entryOverhead = 192

// errQueryDone marks a Redis call cut short by its query's deadline or
// cancellation rather than by Redis: the breaker does not count it.
var errQueryDone = errors.New("cache: the query's context ended")

// Cache is the prediction cache. Create it with New, start it with Start
// (which starts the Redis writer and the purge subscriber), stop it with
// Close.
type Cache struct {
	l1      *otter.Cache[[16]byte, *entry]
	rdb     redis.UniversalClient
	cluster bool // rdb is a Cluster's client
	prefix  string
	timeout time.Duration
	ttl     time.Duration // for entries put with none
	breaker *gobreaker.CircuitBreaker[any]
	flights flights
	fills   *writeback.Queue[fill]
	m       *metrics
	log     *zap.Logger

	mu     sync.Mutex // guards cancel and done
	cancel context.CancelFunc
	done   chan struct{}
}

// fill is an entry on its way to Redis.
type fill struct {
	key string
	val []byte
	ttl time.Duration
}

// New returns a cache; call Start before use when opts.Redis is set.
func New(opts Options) (*Cache, error) {
	if opts.L1Bytes <= 0 {
		opts.L1Bytes = DefaultL1Bytes
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.DefaultTTL <= 0 {
		opts.DefaultTTL = DefaultTTL
	}
	if opts.BreakerFailures <= 0 {
		opts.BreakerFailures = DefaultBreakerFailures
	}
	if opts.BreakerCooldown <= 0 {
		opts.BreakerCooldown = DefaultBreakerCooldown
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	_, cluster := opts.Redis.(*redis.ClusterClient)
	c := &Cache{
		rdb:     opts.Redis,
		cluster: cluster,
		prefix:  opts.Prefix,
		timeout: opts.Timeout,
		ttl:     opts.DefaultTTL,
		m:       newMetrics(opts.Registerer),
		log:     opts.Logger,
	}
	c.fills = writeback.New(fillQueue, fillBatch, drainTimeout, c.writeBatch)
	l1, err := otter.New(&otter.Options[[16]byte, *entry]{
		MaximumWeight: uint64(opts.L1Bytes),
		Weigher: func(_ [16]byte, e *entry) uint32 {
			return uint32(min(cap(e.out)+len(e.model)+len(e.version)+entryOverhead, math.MaxUint32))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[[16]byte, *entry]) time.Duration { return e.Value.ttl }),
		OnDeletion: func(e otter.DeletionEvent[[16]byte, *entry]) {
			if e.Cause == otter.CauseOverflow {
				c.m.evictions.Inc()
			}
		},
		// Maintenance (draining the read and write buffers, evicting)
		// runs on the goroutine that reads or writes, instead of a new
		// goroutine each time the buffers fill: on a busy proxy those
		// starts and their wake-ups cost more than the work. OnDeletion
		// only counts, so running it under the cache's locks is safe.
		Executor: func(fn func()) { fn() },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.l1 = l1
	c.m.l1Bytes(func() float64 { return float64(l1.WeightedSize()) })
	failures := uint32(opts.BreakerFailures)
	c.breaker = gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Timeout:     opts.BreakerCooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return errors.Is(err, errQueryDone) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			c.m.breaker.Set(float64(to))
			c.log.Warn("cache: Redis circuit breaker changed state", zap.Stringer("from", from), zap.Stringer("to", to))
		},
	})
	return c, nil
}

// Start starts writing fills to Redis and following purges made by other
// proxies, until ctx is done or Close is called. Without Redis it does
// nothing.
func (c *Cache) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return errors.New("cache: already started")
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.done = make(chan struct{})
	if c.rdb == nil {
		close(c.done)
		return nil
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.fills.Run(ctx) })
	wg.Go(func() { c.followPurges(ctx) })
	go func() { wg.Wait(); close(c.done) }()
	return nil
}

// Close stops the background work, writing the fills still queued (within
// drainTimeout), the computations of Do still in progress, and L1's
// maintenance. A Do called once Close has begun computes alone, in its
// caller's goroutine, and caches nothing: a request that outlives the
// server's shutdown grace still gets its answer.
func (c *Cache) Close() error {
	c.flights.stop() // first: a flight that ends fills the cache
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	c.l1.StopAllGoroutines()
	return nil
}

// Get looks keys up in L1 and returns how many it missed. It sets outs[i]
// and hits[i] for each key (outs and hits are as long as keys). It does
// not block: follow it with Fetch for the misses.
func (c *Cache) Get(keys []Key, outs [][]byte, hits []Hit) (misses int) {
	for i := range keys {
		outs[i], hits[i] = nil, Miss
		if out, ok := c.getL1(keys[i]); ok {
			outs[i], hits[i] = out, L1
			continue
		}
		misses++
	}
	c.m.lookups.Add(float64(len(keys)))
	if hitsL1 := len(keys) - misses; hitsL1 > 0 {
		c.m.hits[L1].Add(float64(hitsL1))
	}
	return misses
}

// Fetch looks the keys that Get missed (hits[i] == Miss) up in Redis, all
// in one round trip (one per master, in parallel, on a Cluster), and copies what it finds into L1 for ttl. Redis
// trouble makes misses, never errors, and costs at most Options.Timeout
// and never past ctx's deadline.
func (c *Cache) Fetch(ctx context.Context, keys []Key, ttl time.Duration, outs [][]byte, hits []Hit) {
	if c.rdb == nil {
		return
	}
	var idx []int // of the misses
	var rkeys []string
	for i := range keys {
		if hits[i] == Miss {
			idx = append(idx, i)
			rkeys = append(rkeys, c.redisKey(keys[i]))
		}
	}
	if len(idx) == 0 {
		return
	}
	// On a Cluster, the values the healthy masters hold come with the
	// error of one that failed, which redis has counted: the values are
	// hits all the same.
	vals, _ := c.redis(ctx, "mget", c.mget(rkeys))
	found, _ := vals.([]any) // nil when the lookup failed as a whole
	for j, v := range found {
		s, ok := v.(string)
		if !ok {
			continue // nil: not in Redis
		}
		i := idx[j]
		out, ok := decodeValue(s, keys[i].Check)
		if !ok {
			c.m.collisions.Inc()
			continue
		}
		outs[i], hits[i] = out, L2
		c.m.hits[L2].Inc()
		c.putL1(keys[i], out, ttl)
	}
}

// mget returns the call that looks keys up in Redis: one MGET, or, on
// a Cluster, where an MGET takes only keys of one slot, a pipeline of GETs
// (go-redis sends each master its own, in parallel). Either returns the
// values as a []any in the order of keys, nil for those Redis does not
// hold. One MGET that fails returns no values; on a Cluster, the values of
// the masters that answered come with the first error of one that did
// not, nil in place of that one's.
func (c *Cache) mget(keys []string) func(context.Context) (any, error) {
	if !c.cluster {
		return func(ctx context.Context) (any, error) {
			vals, err := c.rdb.MGet(ctx, keys...).Result()
			if err != nil {
				return nil, err
			}
			return vals, nil
		}
	}
	return func(ctx context.Context) (any, error) {
		cmds := make([]*redis.StringCmd, len(keys))
		// Pipelined's error is the first command's in key order, a miss
		// (redis.Nil) as much as a master down: each command's own error
		// says which, so that a failure behind a miss still counts.
		_, _ = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		vals := make([]any, len(keys))
		var failed error
		for i, cmd := range cmds {
			v, err := cmd.Result()
			switch {
			case err == nil:
				vals[i] = v
			case !errors.Is(err, redis.Nil) && failed == nil:
				failed = err
			}
		}
		return vals, failed
	}
}

// getL1 returns k's output from L1, if there and not a collision.
func (c *Cache) getL1(k Key) ([]byte, bool) {
	e, ok := c.l1.GetIfPresent(k.Index)
	if !ok {
		return nil, false
	}
	if e.check != k.Check || e.model != k.Model || e.version != k.Version {
		c.m.collisions.Inc()
		return nil, false
	}
	return e.out, true
}

func (c *Cache) putL1(k Key, out []byte, ttl time.Duration) {
	if ttl <= 0 {
		ttl = c.ttl
	}
	c.l1.Set(k.Index, &entry{check: k.Check, model: k.Model, version: k.Version, out: out, ttl: ttl})
}

// Put stores out under k for ttl (0 means Options.DefaultTTL): in L1 at
// once, in Redis in the background. L1 keeps a copy of out of its own, so
// that an entry weighs what it holds even when out is a slice of a larger
// buffer (a batch's frame), and out stays the caller's.
func (c *Cache) Put(k Key, out []byte, ttl time.Duration) {
	if ttl <= 0 {
		ttl = c.ttl
	}
	c.putL1(k, bytes.Clone(out), ttl)
	c.m.fills.Inc()
	if c.rdb == nil {
		return
	}
	if !c.fills.Offer(fill{key: c.redisKey(k), val: encodeValue(k.Check, out), ttl: ttl}) {
		c.m.fillsDropped.Inc()
	}
}

// redis runs one Redis call through the breaker, bounded by the timeout
// and ctx. An open breaker skips the call.
func (c *Cache) redis(ctx context.Context, op string, call func(context.Context) (any, error)) (any, error) {
	return c.redisWithin(ctx, c.timeout, op, call)
}

// redisWithin is redis with its own timeout.
func (c *Cache) redisWithin(ctx context.Context, timeout time.Duration, op string, call func(context.Context) (any, error)) (any, error) {
	v, err := c.breaker.Execute(func() (any, error) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		v, err := call(cctx)
		if err != nil && ctx.Err() != nil {
			return nil, errQueryDone
		}
		return v, err
	})
	switch {
	case err == nil:
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		c.m.bypassed.WithLabelValues(op).Inc()
	case errors.Is(err, errQueryDone):
	default:
		c.m.redisErrors.WithLabelValues(op).Inc()
	}
	return v, err
}

// writeBatch writes fills to Redis in one pipeline.
func (c *Cache) writeBatch(ctx context.Context, batch []fill) {
	// No query waits on a write: it may take longer than a lookup, and a
	// pipeline of up to fillBatch SETs should not fail (and be lost) on a
	// lookup's few milliseconds.
	_, _ = c.redisWithin(ctx, max(10*c.timeout, writeTimeout), "set", func(ctx context.Context) (any, error) {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, f := range batch {
				p.Set(ctx, f.key, f.val, f.ttl)
			}
			return nil
		})
		return nil, err
	})
}

// Purge removes every cached output of model's versions: from this
// proxy's L1, from Redis, and, through a Redis message, from the L1 of
// every proxy sharing the Redis.
func (c *Cache) Purge(ctx context.Context, model string) error {
	c.purgeL1(model)
	c.m.purges.Inc()
	if c.rdb == nil {
		return nil
	}
	// A purge is an operator's action, not a query: it may take longer
	// than a query's Redis calls, and bypasses the breaker to say plainly
	// when Redis is unreachable.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.eachServer(ctx, func(ctx context.Context, r redis.Cmdable) error { return c.purgeOn(ctx, r, model) }); err != nil {
		return fmt.Errorf("cache: purging model %q in Redis: %w", model, err)
	}
	if err := c.rdb.Publish(ctx, c.purgeChannel(), model).Err(); err != nil {
		return fmt.Errorf("cache: announcing the purge of model %q: %w", model, err)
	}
	c.log.Info("cache: purged a model's outputs", zap.String("model", model))
	return nil
}

// eachServer calls fn with each server that holds keys: every master of
// a Cluster (a SCAN sees the keys of one server only), else the one.
func (c *Cache) eachServer(ctx context.Context, fn func(context.Context, redis.Cmdable) error) error {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return fn(ctx, m) })
	}
	return fn(ctx, c.rdb)
}

// purgeOn removes model's entries from the server r, a thousand at a
// time: one UNLINK each, pipelined, since the keys of one Cluster master
// lie in many slots and an UNLINK of several takes keys of one.
func (c *Cache) purgeOn(ctx context.Context, r redis.Cmdable, model string) error {
	iter := r.Scan(ctx, 0, c.prefix+"p:"+model+":*", 1000).Iterator()
	var keys []string
	unlink := func() error {
		_, err := r.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Unlink(ctx, k)
			}
			return nil
		})
		keys = keys[:0]
		return err
	}
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			if err := unlink(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(keys) > 0 {
		return unlink()
	}
	return nil
}

func (c *Cache) purgeChannel() string { return c.prefix + "p:purge" }

// purgeL1 drops model's entries from L1.
func (c *Cache) purgeL1(model string) {
	for k, e := range c.l1.All() {
		if e.model == model {
			c.l1.Invalidate(k)
		}
	}
}

// followPurges applies the purges announced by other proxies to L1.
func (c *Cache) followPurges(ctx context.Context) {
	sub := c.rdb.Subscribe(ctx, c.purgeChannel())
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				return
			}
			c.purgeL1(msg.Payload)
		case <-ctx.Done():
			return
		}
	}
}

// valueFormat is the first byte of every Redis value; a later format gets
// another byte, and values of unknown formats read as misses.
const valueFormat = 1

// encodeValue is the Redis value: the format byte, the key's check hash
// (little-endian), the output.
func encodeValue(check uint64, out []byte) []byte {
	b := make([]byte, 9+len(out))
	b[0] = valueFormat
	binary.LittleEndian.PutUint64(b[1:9], check)
	copy(b[9:], out)
	return b
}

// decodeValue returns the output in s if s is a value of this format for
// a key with check.
func decodeValue(s string, check uint64) ([]byte, bool) {
	if len(s) < 9 || s[0] != valueFormat || binary.LittleEndian.Uint64([]byte(s[1:9])) != check {
		return nil, false
	}
	return []byte(s[9:]), true
}
