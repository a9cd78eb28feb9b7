package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/selection"
)

// DefaultRecentQueries is how many answered queries a proxy remembers for
// feedback when Options.RecentQueries is 0.
const DefaultRecentQueries = 65536

// asked is what a proxy remembers of an answered query for its feedback:
// which arms its policy chose and what each answered.
type asked struct {
	app    string
	choice selection.Choice
	outs   [][]byte // per choice arm; nil: it did not answer

	mu        sync.Mutex // guards shadowOut
	shadowOut []byte     // the shadow's answer, once it came; nil before or without
}

func (q *asked) shadow() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shadowOut
}

// recent remembers the latest answered queries, by id and by (app, input),
// in this proxy's memory (a ring) and, with shared, in Redis for feedback
// through any proxy.
type recent struct {
	mem    *ring
	shared *shared // nil: this proxy's memory only
	log    *zap.Logger
}

// inputKey names an app's input by a 64-bit hash: a collision would at
// worst score the feedback of one input against another's query.
type inputKey struct {
	app  string
	hash uint64
}

func newRecent(size int, sh *shared, log *zap.Logger) *recent {
	return &recent{mem: newRing(size), shared: sh, log: log}
}

// put remembers query id of app with input.
func (r *recent) put(id string, input []byte, q *asked) {
	k := inputKey{q.app, xxhash.Sum64(input)}
	r.mem.put(id, k, q)
	if r.shared != nil {
		r.shared.enqueue(sharedWrite{id: id, q: q, input: k})
	}
}

// shadowed records the shadow's answer out to query id, which may come
// after put.
func (r *recent) shadowed(id string, q *asked, out []byte) {
	q.mu.Lock()
	q.shadowOut = out
	q.mu.Unlock()
	r.mem.shadowed(id, out)
	if r.shared != nil {
		r.shared.enqueue(sharedWrite{id: id, shadow: out})
	}
}

// sharedGrace is how long a feedback that finds its query nowhere waits
// for the write of another proxy's answer, which a client that sends the
// feedback at once may overtake.
const sharedGrace = 20 * time.Millisecond

// idOf returns the id of the latest query of app with input: as any proxy
// recorded it, with shared, else as this one did.
func (r *recent) idOf(ctx context.Context, app string, input []byte) (string, bool, error) {
	k := inputKey{app, xxhash.Sum64(input)}
	if r.shared == nil {
		id, ok := r.mem.idOf(k)
		return id, ok, nil
	}
	for wait := graceOf(ctx); ; {
		id, ok, err := r.shared.idOf(ctx, k)
		if ok {
			return id, true, nil
		}
		if id, ok := r.mem.idOf(k); ok {
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

// take marks taken and returns query id of app, so that its feedback counts
// once: across proxies, with shared. It fails only when this proxy did not
// answer the query and Redis cannot be reached (ErrUnavailable) or holds
// a record of it that cannot be read (ErrNotFound).
func (r *recent) take(ctx context.Context, id, app string) (*asked, bool, error) {
	local, ok := r.mem.take(id, app)
	if r.shared == nil {
		return local, ok, nil
	}
	q, st, err := r.shared.take(ctx, id, app)
	for wait := graceOf(ctx); err == nil && st == sharedAbsent && !ok && wait(); {
		q, st, err = r.shared.take(ctx, id, app)
	}
	switch {
	case err != nil && ok:
		r.log.Warn("feedback: Redis could not give the query; scoring this proxy's own record of it", zap.String("query_id", id), zap.Error(err))
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
	taken, err := r.shared.mark(ctx, id)
	if err != nil {
		r.log.Warn("feedback: Redis is unavailable; scoring this proxy's own record of the query", zap.String("query_id", id), zap.Error(err))
	}
	if taken {
		return nil, false, nil
	}
	return local, true, nil
}

// restore makes what take marked scorable again, when the feedback failed. It
// runs even when ctx, the request's, has ended (a failed feedback may be
// one that ran out of time), under a feedbackTimeout of its own.
func (r *recent) restore(ctx context.Context, id string, q *asked) {
	r.mem.restore(id, q)
	if r.shared != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), feedbackTimeout)
		defer cancel()
		if err := r.shared.restore(ctx, id); err != nil {
			r.log.Warn("feedback: the query stays taken in Redis; no proxy can score it again until it expires", zap.String("query_id", id), zap.Error(err))
		}
	}
}
