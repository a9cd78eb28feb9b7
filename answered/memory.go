package answered

import (
	"context"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultSize is how many answered queries a proxy remembers when
// Options.Size is 0.
const DefaultSize = 65536

// Memory remembers the latest answered queries, by id and by (app, input),
// in this proxy's memory (a ring of Size records) and, with Options.Redis,
// in Redis, so that their feedback may reach any proxy that shares it.
// Safe for concurrent use.
type Memory struct {
	own    *ring
	shared *shared // nil: this proxy's memory only
	size   int
	log    *zap.Logger
}

// Options configure a Memory. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Size is how many answered queries this proxy remembers. 0 means
	// DefaultSize.
	Size int
	// Redis, when set, keeps every answered query in Redis too, for
	// feedback through any proxy sharing it; nil means this proxy's
	// memory only.
	Redis redis.UniversalClient
	// Prefix starts their keys in Redis.
	Prefix string
	// TTL is how long Redis keeps each. 0 means DefaultSharedTTL.
	TTL time.Duration
	// SharedSize is how many answered queries Redis keeps, across the
	// proxies sharing it: beyond it the oldest are forgotten before
	// their TTL. 0 means DefaultSharedSize.
	SharedSize int
	// Registry receives the metrics of the Redis part. nil means they are
	// registered nowhere.
	Registry prometheus.Registerer
	// Logger receives Redis failures. nil means no logs.
	Logger *zap.Logger
}

// New returns a Memory. With Redis, its writer runs in Run.
func New(o Options) *Memory {
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	m := &Memory{own: newRing(o.Size), size: o.Size, log: o.Logger}
	if o.Redis != nil {
		m.shared = newShared(o, o.Registry, o.Logger)
	}
	return m
}

// Run writes what Put and Shadowed hand to Redis until ctx is done, then
// returns; without Redis it returns at once.
func (m *Memory) Run(ctx context.Context) {
	if m.shared != nil {
		m.shared.writes.Run(ctx)
	}
}

// Size is how many answered queries this proxy remembers.
func (m *Memory) Size() int { return m.size }

// Held returns how many answered queries this proxy holds now, at most
// Size, and the bytes of their records.
func (m *Memory) Held() (queries, bytes int) { return m.own.held() }

// SharedTTL is how long Redis keeps each answered query; 0 without Redis.
func (m *Memory) SharedTTL() time.Duration {
	if m.shared == nil {
		return 0
	}
	return m.shared.ttl
}

// inputKey names an app's input by a 64-bit hash: a collision would at
// worst score the feedback of one input against another's query.
type inputKey struct {
	app  string
	hash uint64
}

// Put remembers query id of app with input.
func (m *Memory) Put(id string, input []byte, q *Query) {
	k := inputKey{q.App, xxhash.Sum64(input)}
	m.own.put(id, k, q)
	if m.shared != nil {
		m.shared.enqueue(sharedWrite{id: id, q: q, input: k})
	}
}

// Shadowed records the shadow's answer out to query id, which may come
// after put.
func (m *Memory) Shadowed(id string, q *Query, out []byte) {
	q.mu.Lock()
	q.shadowOut = out
	q.mu.Unlock()
	m.own.shadowed(id, out)
	if m.shared != nil {
		m.shared.enqueue(sharedWrite{id: id, shadow: out})
	}
}

// restoreTimeout bounds Restore's call to Redis.
const restoreTimeout = 2 * time.Second

// sharedGrace is how long a feedback that finds its query nowhere waits
// for the write of another proxy's answer, which a client that sends the
// feedback at once may overtake.
const sharedGrace = 20 * time.Millisecond

// IDOf returns the id of the latest query of app with input: as any proxy
// recorded it, with shared, else as this one did.
func (m *Memory) IDOf(ctx context.Context, app string, input []byte) (string, bool, error) {
	k := inputKey{app, xxhash.Sum64(input)}
	if m.shared == nil {
		id, ok := m.own.idOf(k)
		return id, ok, nil
	}
	for wait := graceOf(ctx); ; {
		id, ok, err := m.shared.idOf(ctx, k)
		if ok {
			return id, true, nil
		}
		if id, ok := m.own.idOf(k); ok {
			return id, true, nil // this proxy's own, with Redis down or the write still queued
		}
		if err != nil {
			return "", false, err
		}
		if !wait() {
			return "", false, nil
		}
	}
}

// graceOf returns a function that sleeps a little and reports true while
// sharedGrace has not passed since graceOf, and ctx is not done.
func graceOf(ctx context.Context) func() bool {
	end := time.Now().Add(sharedGrace)
	return func() bool {
		if time.Now().After(end) {
			return false
		}
		t := time.NewTimer(2 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// Take marks taken and returns query id of app, so that its feedback counts
// once: across proxies, with shared. It fails only when this proxy did not
// answer the query and Redis cannot be reached (ErrUnavailable) or holds
// a record of it that cannot be read (ErrUnreadable).
func (m *Memory) Take(ctx context.Context, id, app string) (*Query, bool, error) {
	local, ok := m.own.take(id, app)
	if m.shared == nil {
		return local, ok, nil
	}
	q, st, err := m.shared.take(ctx, id, app)
	for wait := graceOf(ctx); err == nil && st == sharedAbsent && !ok && wait(); {
		q, st, err = m.shared.take(ctx, id, app)
	}
	switch {
	case err != nil && ok:
		m.log.Warn("feedback: Redis could not give the query; scoring this proxy's own record of it", zap.String("query_id", id), zap.Error(err))
		return local, true, nil
	case err != nil:
		return nil, false, err
	case st == sharedTaken:
		return nil, false, nil
	case st == sharedFound && ok:
		return local, true, nil // the same query, with its shadow's answer if it came before this take
	case st == sharedFound:
		return q, true, nil
	case !ok:
		return nil, false, nil
	}
	// Only here: its write to Redis is still queued, or was dropped. Mark
	// it taken there first, so that the write cannot bring it back.
	taken, err := m.shared.mark(ctx, id)
	if err != nil {
		m.log.Warn("feedback: Redis is unavailable; scoring this proxy's own record of the query", zap.String("query_id", id), zap.Error(err))
	}
	if taken {
		return nil, false, nil
	}
	return local, true, nil
}

// Restore makes what Take marked scorable again, when the feedback failed. It
// runs even when ctx, the request's, has ended (a failed feedback may be
// one that ran out of time), under a restoreTimeout of its own.
func (m *Memory) Restore(ctx context.Context, id string, q *Query) {
	m.own.restore(id, q)
	if m.shared != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
		defer cancel()
		if err := m.shared.restore(ctx, id); err != nil {
			m.log.Warn("feedback: the query stays taken in Redis; no proxy can score it again until it expires", zap.String("query_id", id), zap.Error(err))
		}
	}
}
