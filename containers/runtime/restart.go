package runtime

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Restarter keeps one replica running: the loop the process and docker
// runtimes share. Its zero value, with Backoff set, is ready for use; one
// Restarter serves one replica.
type Restarter struct {
	Backoff Backoff
	// Metrics, with Key, counts each restart as
	// sloproxy_replica_restarts_total; nil counts none.
	Metrics *Metrics
	Key     VersionKey

	restarts atomic.Int64
}

// Run calls once until ctx ends. Each call runs the replica (a process, a
// container) until it fails or ctx ends. After a call that returned while
// ctx is live, Run calls failed with how long the call lasted and the wait
// Backoff gives for it, waits, counts a restart and calls once again. It
// returns when ctx ends, or after logging a panic of once or failed to log,
// which ends the replica (the caller's deferred clean-up still runs).
func (r *Restarter) Run(ctx context.Context, log *zap.Logger, once func(context.Context), failed func(up, wait time.Duration)) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("runtime: panic; the replica stops", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	for {
		started := time.Now()
		once(ctx)
		if ctx.Err() != nil {
			return
		}
		up := time.Since(started)
		wait := r.Backoff.Next(up)
		failed(up, wait)
		if !Sleep(ctx, wait) {
			return
		}
		r.restarts.Add(1)
		r.Metrics.Restarted(r.Key)
	}
}

// Restarts counts the calls of once after the first: the times the replica
// was started again after failing.
func (r *Restarter) Restarts() int { return int(r.restarts.Load()) }
