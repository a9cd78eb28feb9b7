package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
)

// heartbeatMisses is how many heartbeats in a row a ready replica may miss
// before its container is replaced.
const heartbeatMisses = 3

// replica is one replica: a goroutine that keeps a ready container for it,
// replacing the container whenever it fails, until stopped.
type replica struct {
	rt    *Runtime
	key   runtime.VersionKey
	index int
	spec  spec
	log   *zap.Logger

	cancel    context.CancelFunc
	restarter runtime.Restarter
	// died receives the Engine's die events of the current container.
	died chan struct{}

	mu       sync.Mutex // guards the fields below
	removing bool       // stop was called: drain and remove the container
	served   bool       // the replica was ready, so it may have queries to drain
	id       string     // the current container; empty between containers
	addr     string     // set while ready, or presumed ready (adopted)
	err      error      // why the last container failed
}

// startReplica starts replica index of key running s, in the container
// adopt if not empty, presumed ready at addr (see the package comment).
// r.mu is held.
func (r *Runtime) startReplica(key runtime.VersionKey, index int, s spec, adopt, addr string) *replica {
	ctx, cancel := context.WithCancel(r.ctx)
	rep := &replica{
		rt: r, key: key, index: index, spec: s,
		log:    r.log.With(zap.String("model", key.Model), zap.String("version", key.Version), zap.Int("replica", index)),
		cancel: cancel,
		restarter: runtime.Restarter{Backoff: runtime.Backoff{Min: r.opts.MinBackoff, Max: r.opts.MaxBackoff, ResetAfter: r.opts.ResetAfter},
			Metrics: r.opts.Metrics, Key: key},
		died:   make(chan struct{}, 1),
		addr:   addr,
		served: addr != "",
	}
	r.wg.Go(func() { rep.run(ctx, adopt) })
	return rep
}

// stop withdraws the replica at once; its goroutine then drains and
// removes the container.
func (rep *replica) stop() {
	rep.mu.Lock()
	rep.removing = true
	rep.addr = ""
	rep.mu.Unlock()
	rep.cancel()
}

// state is the replica's address while it is ready, and why its last
// container failed.
func (rep *replica) state() (addr string, err error) {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.addr, rep.err
}

func (rep *replica) status() ReplicaStatus {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return ReplicaStatus{Index: rep.index, Container: rep.id, Addr: rep.addr, Restarts: rep.restarter.Restarts(), Err: rep.err}
}

// event receives an Engine event of container id.
func (rep *replica) event(id, action string) {
	rep.mu.Lock()
	current := id == rep.id
	rep.mu.Unlock()
	if !current {
		return
	}
	switch action {
	case "oom":
		rep.log.Warn("docker runtime: container ran out of memory", zap.String("container", id))
	case "die":
		select {
		case rep.died <- struct{}{}:
		default:
		}
	}
}

// setContainer makes id the replica's container ("" for none), and the one
// the Engine's events are routed to.
func (rep *replica) setContainer(id string) {
	r := rep.rt
	r.mu.Lock()
	rep.mu.Lock()
	if rep.id != "" {
		delete(r.byID, rep.id)
	}
	rep.id = id
	if id != "" {
		r.byID[id] = rep
	}
	rep.mu.Unlock()
	r.mu.Unlock()
	// A die event of the previous container must not fail this one.
	select {
	case <-rep.died:
	default:
	}
}

// setReady records that the replica answers at addr, or ("", err) that
// its container failed.
func (rep *replica) setReady(addr string, err error) {
	rep.mu.Lock()
	if !rep.removing {
		rep.addr = addr
		rep.served = rep.served || addr != ""
	}
	if err != nil {
		rep.err = err
	}
	rep.mu.Unlock()
	rep.rt.Notify()
}

// run keeps a ready container until ctx ends, replacing it with backoff
// whenever it fails.
func (rep *replica) run(ctx context.Context, adopt string) {
	defer rep.finish()
	var err error
	rep.restarter.Run(ctx, rep.log, func(ctx context.Context) {
		err = rep.once(ctx, adopt)
		adopt = ""
	}, func(_, wait time.Duration) {
		rep.setReady("", err)
		rep.log.Warn("docker runtime: replica failed; replacing its container", zap.Error(err), zap.Duration("backoff", wait))
	})
}

// once runs one container (adopt, or a new one) until it fails, which it
// returns, or ctx ends, which returns nil and leaves the container to
// finish. A failed container is removed.
func (rep *replica) once(ctx context.Context, adopt string) (err error) {
	id := adopt
	if id == "" {
		if id, err = rep.create(ctx); err != nil {
			return err
		}
	}
	rep.setContainer(id)
	defer func() {
		if ctx.Err() == nil {
			rep.setContainer("")
			rep.rt.removeContainer(ctx, id, false)
		}
	}()
	addr, err := rep.start(ctx, id, adopt != "")
	if err != nil {
		return err
	}
	c := rpc.NewClient(addr, rpc.ClientOptions{Logger: rep.log})
	c.Start(ctx)
	defer c.Close()
	begun := time.Now()
	if err := rep.warmUp(ctx, id, c); err != nil {
		return err
	}
	rep.log.Info("docker runtime: replica ready", zap.String("container", id), zap.String("addr", addr),
		zap.Duration("warm_up", time.Since(begun)), zap.Bool("adopted", adopt != ""))
	rep.setReady(addr, nil)
	return rep.watch(ctx, id, c)
}

// create creates a new container for the replica.
func (rep *replica) create(ctx context.Context) (string, error) {
	o := &rep.rt.opts
	nonce := make([]byte, 3)
	_, _ = rand.Read(nonce)
	name := o.containerName(rep.key.Model, rep.key.Version, rep.index, hex.EncodeToString(nonce))
	cfg, host := o.config(rep.key.Model, rep.key.Version, rep.index, rep.spec)
	// Not canceled with the replica: a create the Engine has begun ends,
	// and its id is known, so the container is not left behind unseen.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engineTimeout)
	defer cancel()
	resp, err := rep.rt.engine.ContainerCreate(cctx, cfg, host, nil, nil, name)
	switch {
	case client.IsErrNotFound(err):
		return "", fmt.Errorf("image %q: %w (there is no pulling: build or load it on the Engine first)", rep.spec.Image, ErrImageNotFound)
	case err != nil:
		return "", fmt.Errorf("creating container %s: %w", name, err)
	}
	rep.log.Info("docker runtime: created container", zap.String("container", resp.ID), zap.String("name", name), zap.String("image", rep.spec.Image))
	return resp.ID, nil
}

// start starts container id unless adopted (running already), and returns
// the loopback address its RPC port is published on.
func (rep *replica) start(ctx context.Context, id string, adopted bool) (string, error) {
	e := rep.rt.engine
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if !adopted {
		if err := e.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			return "", fmt.Errorf("starting container %s: %w", id, err)
		}
	}
	info, err := e.ContainerInspect(ctx, id)
	if err != nil {
		return "", fmt.Errorf("inspecting container %s: %w", id, err)
	}
	if info.State == nil || !info.State.Running {
		reason, _ := exitReason(info.State)
		return "", rep.failure(ctx, id, strings.TrimPrefix(info.Name, "/"), reason)
	}
	var bindings []string
	if info.NetworkSettings != nil {
		for _, b := range info.NetworkSettings.Ports[rep.rt.opts.containerPort()] {
			if b.HostPort != "" {
				bindings = append(bindings, b.HostPort)
			}
		}
	}
	if len(bindings) == 0 {
		return "", fmt.Errorf("container %s: port %s is not published", id, rep.rt.opts.containerPort())
	}
	return net.JoinHostPort("127.0.0.1", bindings[0]), nil
}

// warmUp waits until the container answers a HELLO and a warm-up PREDICT,
// or fails when it dies or Options.StartTimeout passes first.
func (rep *replica) warmUp(ctx context.Context, id string, c *rpc.Client) error {
	wctx, cancel := context.WithTimeout(ctx, rep.rt.opts.StartTimeout)
	defer cancel()
	ready := make(chan error, 1)
	go func() {
		_, err := c.WaitReady(wctx)
		if err == nil {
			err = warmUpRequest(wctx, c, rep.spec)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cerr := rep.containerError(ctx, id, fmt.Sprintf("did not answer a HELLO and a warm-up request within %v: %v", rep.rt.opts.StartTimeout, err))
		return cerr
	case <-rep.died:
		cancel()
		<-ready
		return rep.exitError(ctx, id)
	}
}

// warmUpRequest sends the warm-up request of s's input type.
func warmUpRequest(ctx context.Context, c *rpc.Client, s spec) error {
	it, err := rpc.ParseInputType(string(s.InputType))
	if err != nil {
		return err
	}
	return c.WarmUp(ctx, it)
}

// watch returns when the ready container dies or misses its heartbeats
// (the failure), or nil when ctx ends.
func (rep *replica) watch(ctx context.Context, id string, c *rpc.Client) error {
	opts := &rep.rt.opts
	tick := time.NewTicker(opts.HeartbeatInterval)
	defer tick.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rep.died:
			return rep.exitError(ctx, id)
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, opts.HeartbeatTimeout)
			err := c.Ping(pctx)
			cancel()
			if err == nil {
				misses = 0
				continue
			}
			if misses++; misses >= heartbeatMisses && ctx.Err() == nil {
				name, st := rep.inspect(ctx, id)
				reason, stopped := exitReason(st)
				if !stopped { // else its die event is late: the exit says more
					reason = fmt.Sprintf("missed %d heartbeats in a row: %v", misses, err)
				}
				return rep.failure(ctx, id, name, reason)
			}
		}
	}
}

// inspect asks the Engine for container id's name and state: id and nil
// when it cannot tell.
func (rep *replica) inspect(ctx context.Context, id string) (name string, st *container.State) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engineTimeout)
	defer cancel()
	info, err := rep.rt.engine.ContainerInspect(ictx, id)
	if err != nil {
		return id, nil
	}
	return strings.TrimPrefix(info.Name, "/"), info.State
}

// exitReason tells how a container in state st exited, and whether it is
// stopped; not stopped when it runs, restarts, or st is nil.
func exitReason(st *container.State) (reason string, stopped bool) {
	if st == nil {
		return "exited", false
	}
	reason = fmt.Sprintf("exited with status %d", st.ExitCode)
	if st.OOMKilled {
		reason += " (out of memory)"
	}
	if st.Error != "" {
		reason += ": " + st.Error
	}
	return reason, !st.Running && !st.Restarting
}

// exitError is the ContainerError of a container that exited.
func (rep *replica) exitError(ctx context.Context, id string) error {
	name, st := rep.inspect(ctx, id)
	reason, _ := exitReason(st)
	return rep.failure(ctx, id, name, reason)
}

// containerError is the ContainerError of container id for reason.
func (rep *replica) containerError(ctx context.Context, id, reason string) error {
	name, _ := rep.inspect(ctx, id)
	return rep.failure(ctx, id, name, reason)
}

// failure is a ContainerError of container id, named name, with the
// container's last lines of output.
func (rep *replica) failure(ctx context.Context, id, name, reason string) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), engineTimeout)
	defer cancel()
	logs, err := rep.rt.tail(lctx, id)
	if err != nil {
		logs = []string{fmt.Sprintf("(its output could not be read: %v)", err)}
	}
	return &ContainerError{Container: name, Reason: reason, Logs: logs}
}

// tail returns container id's last Options.TailLines lines of output.
func (r *Runtime) tail(ctx context.Context, id string) ([]string, error) {
	rc, err := r.engine.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true,
		Tail: fmt.Sprint(r.opts.TailLines)})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	text := strings.TrimRight(out.String(), "\n")
	if text == "" {
		return nil, nil
	}
	return strings.Split(text, "\n"), nil
}

// finish withdraws the replica; when it was stopped (not closed with the
// Runtime), it drains and removes its container.
func (rep *replica) finish() {
	rep.mu.Lock()
	removing, id, served := rep.removing, rep.id, rep.served
	rep.addr = ""
	rep.mu.Unlock()
	rep.setContainer("")
	if !removing || id == "" {
		return
	}
	if served {
		t := time.NewTimer(rep.rt.opts.DrainTimeout)
		select {
		case <-t.C:
		case <-rep.rt.ctx.Done():
			t.Stop()
		}
	}
	rep.log.Info("docker runtime: stopping a withdrawn replica's container", zap.String("container", id))
	rep.rt.removeContainer(context.WithoutCancel(rep.rt.ctx), id, true)
}
