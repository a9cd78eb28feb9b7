package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"go.uber.org/zap"
)

// eventsRetry is the wait before following the Engine's events again after
// the stream broke; the heartbeats cover the gap.
const eventsRetry = time.Second

// followEvents routes the Engine's die and oom events of the owner's
// containers to their replicas until ctx ends.
func (r *Runtime) followEvents(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("docker runtime: panic following the Engine's events; heartbeats alone now detect failures", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", OwnerLabel+"="+r.opts.Owner),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionOOM)),
	)
	for {
		msgs, errs := r.engine.Events(ctx, events.ListOptions{Filters: f})
		err := r.route(ctx, msgs, errs)
		if err == nil {
			return
		}
		r.log.Warn("docker runtime: the Engine's event stream broke; following it again", zap.Error(err))
		t := time.NewTimer(eventsRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// route delivers msgs until the stream fails (its error) or ctx ends (nil).
func (r *Runtime) route(ctx context.Context, msgs <-chan events.Message, errs <-chan error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case m := <-msgs:
			r.mu.Lock()
			rep := r.byID[m.Actor.ID]
			r.mu.Unlock()
			if rep != nil {
				rep.event(m.Actor.ID, string(m.Action))
			}
		}
	}
}
