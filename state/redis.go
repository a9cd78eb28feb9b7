package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults for RedisOptions.
const (
	DefaultRedisPrefix  = "sloproxy:"
	DefaultRedisTimeout = 2 * time.Second
)

// maxUpdateAttempts bounds the optimistic transactions an Update tries
// before it gives up on a key that other writers keep changing.
const maxUpdateAttempts = 50

// RedisOptions configure a Redis backend. The zero value is usable.
type RedisOptions struct {
	// Prefix starts the names of the key and the channel, so several
	// deployments can share one Redis. The document is stored at
	// Prefix+"state" and changes are announced on Prefix+"state:changed".
	// Empty means DefaultRedisPrefix.
	Prefix string
	// Timeout bounds each call to Redis, and each Update including its
	// retries. Zero means DefaultRedisTimeout.
	Timeout time.Duration
	// Logger receives the loss and recovery of the change subscription.
	// Nil means none.
	Logger *zap.Logger
	// WaitReplicas is how many replicas must hold a change before Update
	// returns it: Update follows its transaction with WAIT, on the same
	// connection. Redis replicates asynchronously, so without it a
	// master that fails right after a change may take the change with
	// it when a replica is promoted; with it, the Sentinels promote a
	// replica that holds every change Update returned (they choose the
	// replica with the largest replication offset). 0 means Update
	// returns once the master has the change.
	WaitReplicas int
	// WaitTimeout bounds that WAIT. 0 means DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// DefaultWaitTimeout is RedisOptions.WaitTimeout when it is 0.
const DefaultWaitTimeout = time.Second

// ErrNotReplicated wraps ErrUnavailable for a change that the master took
// but that fewer than RedisOptions.WaitReplicas replicas acknowledged in
// time: it may be lost in a failover, and is not reported as made. It is
// visible meanwhile, and may be kept.
var ErrNotReplicated = fmt.Errorf("%w: the change is not on enough replicas", ErrUnavailable)

// Redis is a Backend in Redis, shared by every proxy that uses the same
// Redis and prefix. The state is one JSON document under one key, changed
// by optimistic transactions (WATCH, GET, MULTI, SET, PUBLISH, EXEC) that
// retry when another writer got in first; the PUBLISH, inside the
// transaction, announces the new revision to every proxy.
//
// One document keeps every change atomic and every load consistent without
// Lua or locks; it is small (apps and models, not predictions) and written
// only by admin actions and runtimes.
// Being one key, it suits a Redis Cluster (no transaction spans slots)
// as well as a Sentinel group, where RedisOptions.WaitReplicas keeps a
// failover from losing a change that Update returned.
type Redis struct {
	client   redis.UniversalClient
	key      string
	channel  string
	timeout  time.Duration
	replicas int           // WaitReplicas
	wait     time.Duration // WaitTimeout
	log      *zap.Logger
}

var _ Backend = (*Redis)(nil)

// NewRedis returns a Redis backend using client, which the caller owns and
// closes (it may share it with the cache and the policies).
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	if opts.Prefix == "" {
		opts.Prefix = DefaultRedisPrefix
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRedisTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	return &Redis{
		client:   client,
		key:      opts.Prefix + "state",
		channel:  opts.Prefix + "state:changed",
		timeout:  opts.Timeout,
		replicas: opts.WaitReplicas,
		wait:     opts.WaitTimeout,
		log:      opts.Logger,
	}
}

// Key returns the key that holds the document.
func (r *Redis) Key() string { return r.key }

// Channel returns the channel on which changes are announced.
func (r *Redis) Channel() string { return r.channel }

// Load returns the stored document.
func (r *Redis) Load(ctx context.Context) (*Data, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.get(ctx, r.client)
}

// get reads and decodes the document through c, a client or a transaction.
func (r *Redis) get(ctx context.Context, c redis.Cmdable) (*Data, error) {
	b, err := c.Get(ctx, r.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return &Data{}, nil
	}
	if err != nil {
		return nil, r.unavailable("load", err)
	}
	d := new(Data)
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("state: redis key %q holds no valid state document: %w", r.key, err)
	}
	return d, nil
}

// Update applies fn in an optimistic transaction, retrying with the new
// document when another writer committed first.
func (r *Redis) Update(ctx context.Context, fn func(*Data) error) (*Data, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		var committed *Data
		var final error // an error not to retry: fn's, or a bad document
		err := r.client.Watch(ctx, func(tx *redis.Tx) error {
			d, err := r.get(ctx, tx)
			if err == nil {
				err = fn(d)
			}
			if err != nil {
				final = err
				return err
			}
			d.Revision++
			d.Schema = schemaVersion
			b, err := json.Marshal(d)
			if err != nil {
				final = fmt.Errorf("state: encode: %w", err)
				return final
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, r.key, b, 0)
				p.Publish(ctx, r.channel, strconv.FormatUint(d.Revision, 10))
				return nil
			})
			if err != nil {
				return err
			}
			committed = d
			final = r.replicated(ctx, tx, d.Revision)
			return final
		}, r.key)
		switch {
		case final != nil:
			return nil, final
		case err == nil:
			return committed, nil
		case !errors.Is(err, redis.TxFailedErr):
			return nil, r.unavailable("update", err)
		case attempt == maxUpdateAttempts:
			return nil, fmt.Errorf("%w: redis: update %s: other writers committed first %d times in a row", ErrUnavailable, r.key, attempt)
		}
		// Another writer committed between our WATCH and EXEC. Wait a
		// little, at random, so that writers in lock step spread out.
		select {
		case <-ctx.Done():
			return nil, r.unavailable("update", ctx.Err())
		case <-time.After(rand.N(time.Duration(attempt) * time.Millisecond)):
		}
	}
}

// replicated waits, when WaitReplicas asks it, until that many replicas
// hold what tx, the connection of the transaction, wrote: WAIT counts
// the writes of the connection it is sent on.
func (r *Redis) replicated(ctx context.Context, tx *redis.Tx, revision uint64) error {
	if r.replicas == 0 {
		return nil
	}
	n, err := tx.Wait(ctx, r.replicas, r.wait).Result()
	switch {
	case err != nil:
		return fmt.Errorf("%w: redis: revision %d of %s: waiting for %d replicas: %v", ErrNotReplicated, revision, r.key, r.replicas, err)
	case int(n) < r.replicas:
		return fmt.Errorf("%w: redis: revision %d of %s: %d of %d replicas acknowledged it within %v", ErrNotReplicated, revision, r.key, n, r.replicas, r.wait)
	}
	return nil
}

func (r *Redis) unavailable(op string, err error) error {
	return fmt.Errorf("%w: redis: %s %s: %w", ErrUnavailable, op, r.key, err)
}

// Watch subscribes to the change channel and calls notify with each
// announced revision, and with 0 whenever the subscription is (re)made,
// since announcements made while it was down are lost. It resubscribes
// after failures with a backoff of up to a second, and returns nil when ctx
// is done.
func (r *Redis) Watch(ctx context.Context, notify func(revision uint64)) error {
	const minBackoff, maxBackoff = 50 * time.Millisecond, time.Second
	backoff := minBackoff
	healthy := true
	relay := func(rev uint64) {
		if rev == 0 && !healthy { // a subscription was confirmed
			healthy = true
			r.log.Info("state: redis change subscription restored", zap.String("channel", r.channel))
		}
		notify(rev)
	}
	for {
		subscribed, err := r.watchOnce(ctx, relay)
		if ctx.Err() != nil {
			return nil
		}
		if subscribed {
			backoff = minBackoff
		}
		if healthy {
			healthy = false
			r.log.Warn("state: redis change subscription lost; resubscribing", zap.String("channel", r.channel), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// watchOnce subscribes once and relays announcements until the connection
// fails or ctx is done. It reports whether the subscription was confirmed.
func (r *Redis) watchOnce(ctx context.Context, notify func(uint64)) (subscribed bool, err error) {
	ps := r.client.Subscribe(ctx)
	defer ps.Close()
	// Receive does not watch ctx; closing the subscription interrupts it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()

	sctx, cancel := context.WithTimeout(ctx, r.timeout)
	err = ps.Subscribe(sctx, r.channel)
	cancel()
	if err != nil {
		return false, err
	}
	// A quiet connection is checked with a PING: if its PONG does not come
	// back within the next interval, the connection is dead.
	const quiet = 10 * time.Second
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, quiet)
		if err != nil {
			var ne net.Error
			if !pinged && errors.As(err, &ne) && ne.Timeout() {
				pctx, cancel := context.WithTimeout(ctx, r.timeout)
				err = ps.Ping(pctx)
				cancel()
				if err != nil {
					return subscribed, err
				}
				pinged = true
				continue
			}
			return subscribed, err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			subscribed = true
			notify(0)
		case *redis.Message:
			rev, err := strconv.ParseUint(m.Payload, 10, 64)
			if err != nil {
				rev = 0 // not ours to judge: reload
			}
			notify(rev)
		}
	}
}
