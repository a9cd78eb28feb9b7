// Package docker is the docker runtime: it runs each replica of a model
// version as a container on one Docker Engine, through the Engine API.
//
// # Containers
//
// A replica is a container of the version's image (state.RuntimeSpec.Image,
// never pulled: the Engine must have it), labelled with its owner
// (Options.Owner), model, version, replica index and a hash of its spec
// (see the *Label constants), run with
//
//	SLOPROXY_RPC_ADDR=0.0.0.0:7000   (Options.ContainerPort)
//	SLOPROXY_MODEL_NAME=<model>
//	SLOPROXY_MODEL_VERSION=<version>
//
// in its environment (after the spec's Env, which they override). The RPC
// port is published on 127.0.0.1 only, on a port the Engine picks. Each
// container drops every capability, may not gain privileges, has a
// read-only root file system with a tmpfs on /tmp (unless
// Options.WritableRoot), and gets the spec's CPU and memory limits and GPU
// device requests.
//
// # Readiness and recovery
//
// A replica is ready, and its address is returned by Ensure, only once its
// container has answered a HELLO and a warm-up PREDICT (one zero input;
// an item error, or a MODEL_ERROR or BAD_REQUEST frame, counts as an
// answer, since what is warmed up is the container, not the model's
// opinion of zeros). The Engine's die and oom
// events, and a heartbeat (PING every Options.HeartbeatInterval, three
// misses in a row), tell when a ready replica is gone: its address is
// withdrawn, its container's last lines of output logged, and a new
// container started after an exponential backoff. The Runtime is a
// runtime.Notifier, so the Manager registers each change at once.
//
// # Reconcile, adoption and draining
//
// New lists the Engine's containers labelled with Options.Owner. Ensure
// adopts the running ones that match a replica of the version it is asked
// for (same index, same spec) instead of starting another, so a proxy that
// restarts starts no duplicates; Running reports the versions of the
// others, which the Manager then removes. Exited containers are removed.
// An adopted container served before the restart, so its address is
// returned at once, not after a new warm-up: other proxies sharing the
// state keep sending to it meanwhile. It is withdrawn if its HELLO and
// warm-up then fail.
//
// A replica that goes (scale down, spec change, Remove) is withdrawn at
// once and its container stopped only after Options.DrainTimeout, so the
// proxies stop sending to it and answer what they sent first. Close stops
// the Runtime's goroutines but leaves the containers running, for the next
// Runtime to adopt.
package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// DefaultOwner is the owner label's value when Options.Owner is empty.
const DefaultOwner = "sloproxy"

// Options configure a Runtime. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Host is the Engine's address, such as unix:///var/run/docker.sock.
	// Empty means $DOCKER_HOST, else the Engine's default socket.
	Host string
	// Owner labels the containers this Runtime creates, and only
	// containers with this label are adopted or removed. Proxies that
	// share one Engine and one state use the same Owner; independent ones
	// sharing an Engine need different ones. Empty means DefaultOwner.
	// It is also the prefix of the containers' names.
	Owner string
	// ContainerPort is the port models listen on inside their
	// containers. 0 means 7000.
	ContainerPort int
	// Network is the network the containers join. Empty means the
	// Engine's default bridge.
	Network string
	// WritableRoot gives containers a writable root file system, for
	// images that write outside /tmp. False means read-only.
	WritableRoot bool
	// StartTimeout bounds the time from starting a container to its
	// answering the warm-up request. 0 means 2 minutes.
	StartTimeout time.Duration
	// DrainTimeout is how long a replica that goes keeps running after
	// its address is withdrawn, for the proxies to answer what they sent
	// it. 0 means 5 s.
	DrainTimeout time.Duration
	// StopTimeout is how long a container has to exit after SIGTERM
	// before it gets SIGKILL. 0 means 5 s.
	StopTimeout time.Duration
	// HeartbeatInterval is the time between PINGs to a ready replica, and
	// HeartbeatTimeout how long one may take; three misses in a row
	// replace the container. 0 means 1 s and 2 s.
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// MinBackoff is the wait before replacing a replica's container after
	// its first failure; the wait doubles with each further failure up
	// to MaxBackoff. 0 means 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// ResetAfter is how long a container must stay ready for the next
	// replacement to wait MinBackoff again. 0 means 30 s.
	ResetAfter time.Duration
	// TailLines is how many of a failed container's last lines of output
	// are logged and put in its ContainerError. 0 means 20.
	TailLines int
	// Logger receives starts, failures and replacements. nil means no logs.
	Logger *zap.Logger
	// Metrics counts replacements. nil means none are counted.
	Metrics *runtime.Metrics
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Owner == "" {
		o.Owner = DefaultOwner
	}
	if o.ContainerPort <= 0 {
		o.ContainerPort = 7000
	}
	def(&o.StartTimeout, 2*time.Minute)
	def(&o.DrainTimeout, 5*time.Second)
	def(&o.StopTimeout, 5*time.Second)
	def(&o.HeartbeatInterval, time.Second)
	def(&o.HeartbeatTimeout, 2*time.Second)
	b := runtime.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff, ResetAfter: o.ResetAfter}.WithDefaults()
	o.MinBackoff, o.MaxBackoff, o.ResetAfter = b.Min, b.Max, b.ResetAfter
	if o.TailLines <= 0 {
		o.TailLines = 20
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// engineTimeout bounds each Engine API call but the event stream.
const engineTimeout = 30 * time.Second

// Runtime runs model versions' replicas as containers. Create it with New;
// Close stops its goroutines and leaves the containers running.
//
// Its methods are safe for concurrent use. None holds a lock while it
// waits for the Engine: containers start, warm up and stop in the replicas'
// goroutines, so a scale-down, a Remove or a Close during a slow scale-up
// takes effect at once.
type Runtime struct {
	opts   Options
	log    *zap.Logger
	engine *client.Client

	// ctx is the parent of every replica's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the replicas' goroutines and the event loop

	// Signal makes the Runtime a runtime.Notifier: it signals when a
	// replica became ready or stopped being so.
	runtime.Signal

	// mu guards closed, groups, adopted and byID.
	mu     sync.Mutex
	closed bool
	groups map[runtime.VersionKey]*group
	// adopted holds the running containers found by New that no replica
	// has claimed yet, by version and replica index.
	adopted map[runtime.VersionKey]map[int][]container.Summary
	// byID finds the replica of a container, for the Engine's events.
	byID map[string]*replica
}

var (
	_ runtime.Runtime  = (*Runtime)(nil)
	_ runtime.Notifier = (*Runtime)(nil)
)

// group is the replicas of one model version, by index.
type group struct {
	replicas []*replica
}

// New connects to the Engine, lists the containers Options.Owner labels
// (removing the exited ones), and starts following the Engine's events.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	opts.setDefaults()
	copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		copts = append(copts, client.WithHost(opts.Host))
	}
	engine, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("docker runtime: %w", err)
	}
	r := &Runtime{
		opts: opts, log: opts.Logger, engine: engine,
		Signal:  runtime.NewSignal(),
		groups:  map[runtime.VersionKey]*group{},
		adopted: map[runtime.VersionKey]map[int][]container.Summary{},
		byID:    map[string]*replica{},
	}
	pctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if _, err := engine.Ping(pctx); err != nil {
		_ = engine.Close()
		return nil, fmt.Errorf("docker runtime: the Docker Engine does not answer: %w", err)
	}
	if err := r.findOwned(pctx); err != nil {
		_ = engine.Close()
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.wg.Go(func() { r.followEvents(r.ctx) })
	return r, nil
}

// findOwned fills r.adopted with the owner's running containers and removes
// the others.
func (r *Runtime) findOwned(ctx context.Context) error {
	list, err := r.engine.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", OwnerLabel+"="+r.opts.Owner))})
	if err != nil {
		return fmt.Errorf("docker runtime: listing containers: %w", err)
	}
	for _, c := range list {
		index, err := strconv.Atoi(c.Labels[ReplicaLabel])
		key := runtime.VersionKey{Model: c.Labels[ModelLabel], Version: c.Labels[VersionLabel]}
		if c.State != container.StateRunning || err != nil || key.Model == "" || key.Version == "" {
			r.log.Info("docker runtime: removing a container that does not run", zap.String("container", c.ID), zap.String("state", string(c.State)))
			if err := r.engine.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !client.IsErrNotFound(err) {
				return fmt.Errorf("docker runtime: removing container %s: %w", c.ID, err)
			}
			continue
		}
		if r.adopted[key] == nil {
			r.adopted[key] = map[int][]container.Summary{}
		}
		r.adopted[key][index] = append(r.adopted[key][index], c)
	}
	return nil
}

// Ensure makes mv's replicas run as it specifies and returns the addresses
// of those that are ready, in replica order. It adopts matching containers
// found by New, starts missing replicas, withdraws extra ones (the highest
// indexes) and replaces those whose spec changed; replicas come up in the
// background and a Changed signal tells when one is ready.
//
// The error wraps ErrImageNotFound when a replica is to start and the
// Engine has no image of the spec's name; it is a *ContainerError (or joins
// several) when no replica is ready and some failed to start.
func (r *Runtime) Ensure(ctx context.Context, mv state.ModelVersion) ([]string, error) {
	if err := runtime.CheckImage(mv, state.RuntimeDocker); err != nil {
		return nil, err
	}
	key := runtime.VersionKey{Model: mv.Model, Version: mv.Version}
	want := specOf(mv)
	n := max(mv.Replicas, 0)

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	g := r.groups[key]
	if g == nil {
		g = &group{}
		r.groups[key] = g
	}
	// Withdraw every replica when the spec changed (Ensure gives all of a
	// version's replicas one spec), else the extra ones.
	keep := n
	if len(g.replicas) > 0 && g.replicas[0].spec.hash() != want.hash() {
		keep = 0
	}
	if len(g.replicas) > keep {
		for _, rep := range g.replicas[keep:] {
			rep.stop()
		}
		g.replicas = slices.Clone(g.replicas[:keep])
	}
	short := len(g.replicas) < n
	r.mu.Unlock()

	// Asking the Engine holds no lock: a Remove or Close meanwhile goes
	// ahead, and the check below sees it.
	if short && !r.imageKnown(want.Image) {
		if err := r.checkImage(ctx, want.Image); err != nil {
			return nil, fmt.Errorf("model %q version %q: %w", mv.Model, mv.Version, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if r.groups[key] != g {
		return nil, fmt.Errorf("model %q version %q: removed while its replicas were being ensured", mv.Model, mv.Version)
	}
	for i := len(g.replicas); i < n; i++ {
		id, addr := r.claim(key, i, want)
		g.replicas = append(g.replicas, r.startReplica(key, i, want, id, addr))
	}
	r.dropUnclaimed(key)
	var addrs []string
	var failures []error
	for _, rep := range g.replicas {
		addr, err := rep.state()
		switch {
		case addr != "":
			addrs = append(addrs, addr)
		case err != nil:
			failures = append(failures, err)
		}
	}
	if len(addrs) == 0 && len(failures) > 0 {
		return nil, fmt.Errorf("model %q version %q: no replica is ready: %w", mv.Model, mv.Version, errors.Join(failures...))
	}
	return addrs, nil
}

// imageKnown reports whether a ready replica already runs image, which
// saves asking the Engine on every pass.
func (r *Runtime) imageKnown(image string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.groups {
		for _, rep := range g.replicas {
			if addr, _ := rep.state(); addr != "" && rep.spec.Image == image {
				return true
			}
		}
	}
	return false
}

// checkImage fails, wrapping ErrImageNotFound, when the Engine has no
// image of that name.
func (r *Runtime) checkImage(ctx context.Context, image string) error {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	_, err := r.engine.ImageInspect(ctx, image)
	switch {
	case client.IsErrNotFound(err):
		return fmt.Errorf("image %q: %w (there is no pulling: build or load it on the Engine first)", image, ErrImageNotFound)
	case err != nil:
		return fmt.Errorf("image %q: %w", image, err)
	}
	return nil
}

// claim takes from the adopted containers the one to be replica index of
// key running s, if any: its id and the address its RPC port is published
// on. r.mu is held.
func (r *Runtime) claim(key runtime.VersionKey, index int, s spec) (id, addr string) {
	cs := r.adopted[key][index]
	for i, c := range cs {
		if c.Labels[SpecLabel] != s.hash() {
			continue
		}
		r.adopted[key][index] = slices.Delete(cs, i, i+1)
		for _, p := range c.Ports {
			if int(p.PrivatePort) == r.opts.ContainerPort && p.IP == "127.0.0.1" && p.PublicPort != 0 {
				addr = net.JoinHostPort(p.IP, strconv.Itoa(int(p.PublicPort)))
			}
		}
		return c.ID, addr
	}
	return "", ""
}

// dropUnclaimed removes, in the background, the adopted containers of key
// that Ensure did not claim: duplicates, extra replicas, other specs.
// r.mu is held.
func (r *Runtime) dropUnclaimed(key runtime.VersionKey) {
	for _, cs := range r.adopted[key] {
		for _, c := range cs {
			r.removeInBackground(c.ID)
		}
	}
	delete(r.adopted, key)
}

// removeInBackground stops and removes a container that serves nobody.
func (r *Runtime) removeInBackground(id string) {
	r.log.Info("docker runtime: removing a container that is no longer wanted", zap.String("container", id))
	r.wg.Go(func() { r.removeContainer(context.WithoutCancel(r.ctx), id, true) })
}

// removeContainer removes id; with grace, it first stops it (SIGTERM, then
// SIGKILL after StopTimeout) so that the model finishes what it holds. A
// container that failed gets no grace: it is killed at once.
func (r *Runtime) removeContainer(ctx context.Context, id string, grace bool) {
	ctx, cancel := context.WithTimeout(ctx, engineTimeout+r.opts.StopTimeout)
	defer cancel()
	if grace {
		secs := int((r.opts.StopTimeout + time.Second - 1) / time.Second)
		if err := r.engine.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil && !client.IsErrNotFound(err) {
			r.log.Warn("docker runtime: stopping a container failed", zap.String("container", id), zap.Error(err))
		}
	}
	if err := r.engine.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !client.IsErrNotFound(err) {
		r.log.Warn("docker runtime: removing a container failed", zap.String("container", id), zap.Error(err))
	}
}

// Remove withdraws every replica of a model version; their containers stop
// after the drain timeout, in the background. Removing a version that runs
// nothing is not an error.
func (r *Runtime) Remove(_ context.Context, model, version string) error {
	key := runtime.VersionKey{Model: model, Version: version}
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.groups[key]; g != nil {
		for _, rep := range g.replicas {
			rep.stop()
		}
		delete(r.groups, key)
	}
	r.dropUnclaimed(key)
	return nil
}

// Running returns the model versions that have replicas or adopted
// containers, sorted.
func (r *Runtime) Running(context.Context) ([]runtime.VersionKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make(map[runtime.VersionKey]bool, len(r.groups)+len(r.adopted))
	for k := range r.groups {
		keys[k] = true
	}
	for k := range r.adopted {
		keys[k] = true
	}
	return runtime.SortedKeys(keys), nil
}

// ReplicaStatus describes one replica.
type ReplicaStatus struct {
	// Index is the replica's position among its version's replicas.
	Index int
	// Container is the id of its current container; empty between a
	// failure and the next start.
	Container string
	// Addr is where the replica answers (127.0.0.1:port) once ready;
	// empty until then.
	Addr string
	// Restarts counts the containers started after the first failed.
	Restarts int
	// Err is why the last container failed; nil if none did.
	Err error
}

// Status returns the replicas of a model version, by index; nil if it runs
// none.
func (r *Runtime) Status(model, version string) []ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.groups[runtime.VersionKey{Model: model, Version: version}]
	if g == nil {
		return nil
	}
	out := make([]ReplicaStatus, len(g.replicas))
	for i, rep := range g.replicas {
		out[i] = rep.status()
	}
	return out
}

// Close stops following the Engine and watching the replicas, and waits for
// replicas already withdrawn to drain and stop. The containers of the
// others keep running, for the next Runtime to adopt. Ensure fails
// afterwards.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return r.engine.Close()
}
