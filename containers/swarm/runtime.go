// Package swarm is the swarm runtime: it runs each model version as a
// Docker Swarm service, whose tasks are the version's replicas, on the
// swarm's nodes, through the Engine API of a manager node.
//
// # Services
//
// A version is one replicated service of the version's image (never
// pulled by sloproxy: the nodes must have it, or pull it themselves from a
// registry), labelled as the docker runtime labels its containers (owner,
// model, version, spec hash: docker.OwnerLabel and the others), with
//
//	SLOPROXY_RPC_ADDR=0.0.0.0:7000   (Options.ContainerPort)
//	SLOPROXY_MODEL_NAME=<model>
//	SLOPROXY_MODEL_VERSION=<version>
//	SLOPROXY_RPC_SECRET=<the version's secret>
//
// in its tasks' environment. The RPC port is published in host mode on a
// port each node picks (the routing mesh is not used: the proxy dials the
// task where it runs). Each task drops every capability, has a read-only
// root file system with a tmpfs on /tmp (unless Options.WritableRoot), the
// version's CPU and memory as limits and as reservations (so the scheduler
// places a task only where it fits), its GPUs as reservations of the
// nodes' generic resources (Options.GPUResource), and the placement
// constraints and spread preferences of Options.
//
// # Authentication
//
// Host-mode ports answer on every interface of every node, so each
// version's tasks get a secret, rpc.DeriveSecret(Options.RPCKey, model,
// version), and serve only peers that prove it (docs/rpc.md,
// "Authentication"). Every proxy that dispatches to swarm versions derives
// the same secret from the same key.
//
// # Readiness, failures and updates
//
// Ensure returns the addresses (node address : published port) of the
// running tasks that answered a HELLO, the AUTH and a warm-up request. A
// task that stops (killed, failed, its node gone) leaves the running set
// and its address is withdrawn; Swarm starts a replacement (restart policy
// "any"), whose address is registered once it answers. The Runtime polls
// the tasks every Options.PollInterval and, as a runtime.Notifier, tells
// the Manager when they changed.
//
// A changed replica count updates the service's replicas. A changed spec
// (image, environment, resources) updates the service: Swarm replaces its
// tasks one at a time, starting each new task before stopping an old one,
// and rolls the service back to its previous spec if the new tasks fail.
//
// # Adoption
//
// New lists the services Options.Owner labels: the running tasks of those
// that match the state are presumed ready (and checked again in the
// background), so a proxy that restarts starts nothing and withdraws
// nothing; Running reports the others, which the Manager removes. A
// service that another proxy of the same owner created later is adopted
// when its version is first ensured, so proxies sharing a state and an
// owner may all manage the runtime. Close leaves the services running.
package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// DefaultGPUResource is the generic resource kind a GPU is when
// Options.GPUResource is empty: what nvidia's guide has the nodes
// advertise (node-generic-resources in daemon.json).
const DefaultGPUResource = "NVIDIA-GPU"

// Options configure a Runtime. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Host is the address of a manager node's Engine. Empty means
	// $DOCKER_HOST, else the Engine's default socket.
	Host string
	// Owner labels the services this Runtime creates, and only services
	// with this label are adopted or removed. It is also the prefix of
	// the services' names. Empty means docker.DefaultOwner.
	Owner string
	// RPCKey derives each version's RPC secret (rpc.DeriveSecret).
	// Required: New fails without it.
	RPCKey []byte
	// ContainerPort is the port models listen on inside their tasks. 0
	// means 7000.
	ContainerPort int
	// Network is an overlay network the tasks join. Empty means none
	// beyond the default.
	Network string
	// Constraints are placement constraints every task obeys, as
	// `docker service create --constraint` takes them
	// ("node.labels.gpu==true").
	Constraints []string
	// Preferences spread the tasks over the values of node labels, as
	// `--placement-pref spread=node.labels.zone` does; each entry is the
	// label ("node.labels.zone").
	Preferences []string
	// GPUResource is the generic resource kind the nodes advertise their
	// GPUs as. Empty means DefaultGPUResource.
	GPUResource string
	// WritableRoot gives tasks a writable root file system. False means
	// read-only.
	WritableRoot bool
	// StartTimeout bounds the time from a task running to its answering
	// the warm-up request. 0 means 2 minutes.
	StartTimeout time.Duration
	// StopGracePeriod is how long a task has to exit after SIGTERM before
	// it gets SIGKILL. 0 means 5 s.
	StopGracePeriod time.Duration
	// PollInterval is the time between two looks at the tasks. 0 means 1 s.
	PollInterval time.Duration
	// Logger receives what changes and what fails. Nil means no logs.
	Logger *zap.Logger
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Owner == "" {
		o.Owner = docker.DefaultOwner
	}
	if o.ContainerPort <= 0 {
		o.ContainerPort = 7000
	}
	if o.GPUResource == "" {
		o.GPUResource = DefaultGPUResource
	}
	def(&o.StartTimeout, 2*time.Minute)
	def(&o.StopGracePeriod, 5*time.Second)
	def(&o.PollInterval, time.Second)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// engineTimeout bounds each Engine API call.
const engineTimeout = 30 * time.Second

// probeRetry is the wait before a task that failed its warm-up is tried
// again.
const probeRetry = 5 * time.Second

// Runtime runs model versions as Swarm services. Create it with New; Close
// stops its goroutines and leaves the services running.
type Runtime struct {
	opts   Options
	log    *zap.Logger
	engine *client.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the poll loop and the probes

	// Signal makes the Runtime a runtime.Notifier: it signals when a
	// replica became ready or stopped being so.
	runtime.Signal

	// mu guards closed, services, nodes and tasks.
	mu       sync.Mutex
	closed   bool
	services map[runtime.VersionKey]*service
	nodes    map[string]string // node id → its address
}

var (
	_ runtime.Runtime  = (*Runtime)(nil)
	_ runtime.Notifier = (*Runtime)(nil)
)

// service is what the Runtime knows of one version's service.
type service struct {
	id       string
	spec     string // the SpecLabel of the spec it runs
	replicas uint64
	// tasks are the addresses of its running tasks, by address: whether
	// each answered its warm-up (ready), is being probed, or failed when.
	tasks map[string]*task
}

type task struct {
	ready, probing bool
	failed         time.Time
}

// New connects to a swarm manager's Engine and lists the owner's services
// for adoption. It fails when the Engine is not a swarm manager.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	opts.setDefaults()
	if len(opts.RPCKey) == 0 {
		return nil, errors.New("swarm runtime: an RPC key is required (the tasks' ports answer off loopback)")
	}
	copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		copts = append(copts, client.WithHost(opts.Host))
	}
	engine, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, fmt.Errorf("swarm runtime: %w", err)
	}
	r := &Runtime{opts: opts, log: opts.Logger, engine: engine, Signal: runtime.NewSignal(),
		services: map[runtime.VersionKey]*service{}, nodes: map[string]string{}}
	ictx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := r.adopt(ictx); err != nil {
		r.cancel()
		_ = engine.Close()
		return nil, err
	}
	r.wg.Go(r.poll)
	return r, nil
}

// adopt checks that the Engine manages a swarm and records the owner's
// services, their running tasks presumed ready.
func (r *Runtime) adopt(ctx context.Context) error {
	info, err := r.engine.Info(ctx)
	if err != nil {
		return fmt.Errorf("swarm runtime: the Docker Engine does not answer: %w", err)
	}
	if info.Swarm.LocalNodeState != swarm.LocalNodeStateActive || !info.Swarm.ControlAvailable {
		return fmt.Errorf("swarm runtime: the Engine is not a swarm manager (swarm state %q); run `docker swarm init` or point runtimes.swarm.host at a manager",
			info.Swarm.LocalNodeState)
	}
	list, err := r.engine.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+r.opts.Owner))})
	if err != nil {
		return fmt.Errorf("swarm runtime: listing services: %w", err)
	}
	running, err := r.runningTasks(ctx, "")
	if err != nil {
		return err
	}
	var recheck []func() // started once r.services is complete
	for _, s := range list {
		key := runtime.VersionKey{Model: s.Spec.Labels[docker.ModelLabel], Version: s.Spec.Labels[docker.VersionLabel]}
		if key.Model == "" || key.Version == "" {
			continue
		}
		svc := &service{id: s.ID, spec: s.Spec.Labels[docker.SpecLabel], replicas: replicasOf(s.Spec), tasks: map[string]*task{}}
		for _, addr := range running[s.ID] {
			// Presumed ready, since it served before the restart, and
			// checked again below: withdrawn if its warm-up now fails.
			svc.tasks[addr] = &task{ready: true, probing: true}
			recheck = append(recheck, func() { r.probe(key, addr) })
		}
		r.services[key] = svc
		r.log.Info("swarm runtime: adopted a service", zap.String("model", key.Model), zap.String("version", key.Version),
			zap.String("service", s.ID), zap.Strings("tasks", slices.Sorted(maps.Keys(svc.tasks))))
	}
	for _, f := range recheck {
		r.wg.Go(f)
	}
	return nil
}

func replicasOf(s swarm.ServiceSpec) uint64 {
	if s.Mode.Replicated == nil || s.Mode.Replicated.Replicas == nil {
		return 0
	}
	return *s.Mode.Replicated.Replicas
}

// Ensure makes mv's service run as mv says (creating it, or updating its
// replica count or spec) and returns the addresses of its ready tasks.
func (r *Runtime) Ensure(ctx context.Context, mv state.ModelVersion) ([]string, error) {
	if err := runtime.CheckImage(mv, state.RuntimeSwarm); err != nil {
		return nil, err
	}
	key := runtime.VersionKey{Model: mv.Model, Version: mv.Version}
	spec := r.opts.serviceSpec(mv)
	hash := spec.Labels[docker.SpecLabel]
	n := uint64(max(mv.Replicas, 0))

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, docker.ErrClosed
	}
	svc := r.services[key]
	r.mu.Unlock()

	ectx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if svc == nil {
		// Another proxy of the same owner may have created it since New.
		found, err := r.find(ectx, spec.Name)
		if err != nil {
			return nil, fmt.Errorf("model %q version %q: %w", mv.Model, mv.Version, err)
		}
		svc = found
	}
	switch {
	case svc == nil:
		resp, err := r.engine.ServiceCreate(ectx, spec, swarm.ServiceCreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("model %q version %q: creating its service: %w", mv.Model, mv.Version, err)
		}
		svc = &service{id: resp.ID, spec: hash, replicas: n, tasks: map[string]*task{}}
		r.log.Info("swarm runtime: created a service", zap.String("model", mv.Model), zap.String("version", mv.Version),
			zap.String("service", resp.ID), zap.String("name", spec.Name), zap.Uint64("replicas", n))
	case svc.spec != hash || svc.replicas != n:
		if err := r.update(ectx, svc.id, spec); err != nil {
			if client.IsErrNotFound(err) {
				r.forget(key)
			}
			return nil, fmt.Errorf("model %q version %q: updating its service: %w", mv.Model, mv.Version, err)
		}
		r.log.Info("swarm runtime: updated a service", zap.String("model", mv.Model), zap.String("version", mv.Version),
			zap.String("service", svc.id), zap.Bool("spec_changed", svc.spec != hash), zap.Uint64("replicas", n))
		svc = &service{id: svc.id, spec: hash, replicas: n, tasks: svc.tasks}
	}
	running, err := r.runningTasks(ectx, svc.id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, docker.ErrClosed
	}
	r.services[key] = svc
	addrs := r.track(key, svc, running[svc.id])
	r.mu.Unlock()
	if len(addrs) == 0 {
		if _, _, err := r.engine.ServiceInspectWithRaw(ectx, svc.id, swarm.ServiceInspectOptions{}); client.IsErrNotFound(err) {
			r.forget(key)
			return nil, fmt.Errorf("model %q version %q: its service %s is gone; creating it again", mv.Model, mv.Version, svc.id)
		}
		if problem := r.taskProblem(ectx, svc.id); problem != "" {
			return nil, fmt.Errorf("model %q version %q: no task is ready: %s", mv.Model, mv.Version, problem)
		}
	}
	return addrs, nil
}

// forget drops a version whose service was removed behind the runtime's
// back, and asks for a pass, which creates it again.
func (r *Runtime) forget(key runtime.VersionKey) {
	r.mu.Lock()
	delete(r.services, key)
	r.mu.Unlock()
	r.Notify()
}

// find returns the owner's service of that name, nil if there is none.
func (r *Runtime) find(ctx context.Context, name string) (*service, error) {
	s, _, err := r.engine.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	switch {
	case client.IsErrNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("inspecting service %s: %w", name, err)
	case s.Spec.Labels[docker.OwnerLabel] != r.opts.Owner:
		return nil, fmt.Errorf("service %s exists and is not owner %q's: remove it or choose another owner", name, r.opts.Owner)
	}
	return &service{id: s.ID, spec: s.Spec.Labels[docker.SpecLabel], replicas: replicasOf(s.Spec), tasks: map[string]*task{}}, nil
}

// update replaces the spec of service id with spec.
func (r *Runtime) update(ctx context.Context, id string, spec swarm.ServiceSpec) error {
	cur, _, err := r.engine.ServiceInspectWithRaw(ctx, id, swarm.ServiceInspectOptions{})
	if err != nil {
		return err
	}
	_, err = r.engine.ServiceUpdate(ctx, id, cur.Version, spec, swarm.ServiceUpdateOptions{})
	return err
}

// track makes svc's tasks the running addrs: it forgets those gone, starts
// probing new ones, and returns the ready ones, sorted. r.mu is held.
func (r *Runtime) track(key runtime.VersionKey, svc *service, addrs []string) []string {
	maps.DeleteFunc(svc.tasks, func(a string, _ *task) bool { return !slices.Contains(addrs, a) })
	var ready []string
	for _, a := range addrs {
		t := svc.tasks[a]
		if t == nil {
			t = &task{}
			svc.tasks[a] = t
		}
		if t.ready {
			ready = append(ready, a)
		}
		if !t.ready && !t.probing && time.Since(t.failed) > probeRetry {
			t.probing = true
			r.wg.Go(func() { r.probe(key, a) })
		}
	}
	slices.Sort(ready)
	return ready
}

// probe waits for the task at addr to answer a HELLO, the AUTH and a
// warm-up request, records the outcome, and notifies when the task's
// readiness changed.
func (r *Runtime) probe(key runtime.VersionKey, addr string) {
	log := r.log.With(zap.String("model", key.Model), zap.String("version", key.Version), zap.String("addr", addr))
	err := r.warmUp(addr, key)
	changed := false
	r.mu.Lock()
	if svc := r.services[key]; svc != nil {
		if t := svc.tasks[addr]; t != nil {
			changed = t.ready != (err == nil)
			t.probing, t.ready = false, err == nil
			if err != nil {
				t.failed = time.Now()
			}
		}
	}
	r.mu.Unlock()
	switch {
	case err != nil && r.ctx.Err() == nil:
		log.Warn("swarm runtime: a task did not answer its warm-up; trying it again later", zap.Error(err))
	case err == nil && changed:
		log.Info("swarm runtime: task ready")
	}
	if changed {
		r.Notify()
	}
}

// warmUp sends the task at addr, with the version's secret, a warm-up
// request of the input type its HELLO announces.
func (r *Runtime) warmUp(addr string, key runtime.VersionKey) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.StartTimeout)
	defer cancel()
	c := rpc.NewClient(addr, rpc.ClientOptions{Secret: []byte(rpc.DeriveSecret(r.opts.RPCKey, key.Model, key.Version)), Logger: r.log})
	c.Start(ctx)
	defer c.Close()
	h, err := c.WaitReady(ctx)
	if err != nil {
		return err
	}
	return c.WarmUp(ctx, h.InputType)
}

// runningTasks returns the addresses of the running tasks, by service id,
// each sorted: of the service serviceID, or of every service when it is
// "". A service that is gone has none (the Engine refuses its filter as
// not found).
func (r *Runtime) runningTasks(ctx context.Context, serviceID string) (map[string][]string, error) {
	args := filters.NewArgs(filters.Arg("desired-state", "running"))
	if serviceID != "" {
		args.Add("service", serviceID)
	}
	tasks, err := r.engine.TaskList(ctx, swarm.TaskListOptions{Filters: args})
	if serviceID != "" && client.IsErrNotFound(err) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("swarm runtime: listing tasks: %w", err)
	}
	out := map[string][]string{}
	for _, t := range tasks {
		if t.Status.State != swarm.TaskStateRunning || t.Status.PortStatus.Ports == nil {
			continue
		}
		// The first port published for the target: an Engine with IPv6
		// publishes it twice, IPv4 first, and the two may differ; the
		// node's address is the one it advertises, IPv4 here.
		port := uint32(0)
		for _, p := range t.Status.PortStatus.Ports {
			if p.TargetPort == uint32(r.opts.ContainerPort) && p.PublishedPort != 0 {
				port = p.PublishedPort
				break
			}
		}
		if port == 0 {
			continue
		}
		host, err := r.nodeAddr(ctx, t.NodeID)
		if err != nil {
			return nil, err
		}
		out[t.ServiceID] = append(out[t.ServiceID], net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	for _, addrs := range out {
		slices.Sort(addrs)
	}
	return out, nil
}

// nodeAddr is the address node id advertises, asked once.
func (r *Runtime) nodeAddr(ctx context.Context, id string) (string, error) {
	r.mu.Lock()
	addr, ok := r.nodes[id]
	r.mu.Unlock()
	if ok {
		return addr, nil
	}
	n, _, err := r.engine.NodeInspectWithRaw(ctx, id)
	if err != nil {
		return "", fmt.Errorf("swarm runtime: inspecting node %s: %w", id, err)
	}
	if n.Status.Addr == "" {
		return "", fmt.Errorf("swarm runtime: node %s has no address", id)
	}
	r.mu.Lock()
	r.nodes[id] = n.Status.Addr
	r.mu.Unlock()
	return n.Status.Addr, nil
}

// taskProblem is why the latest task of service id that failed did, or "".
func (r *Runtime) taskProblem(ctx context.Context, id string) string {
	tasks, err := r.engine.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", id))})
	if err != nil {
		return ""
	}
	var latest *swarm.Task
	for i, t := range tasks {
		if t.Status.Err != "" && (latest == nil || t.Status.Timestamp.After(latest.Status.Timestamp)) {
			latest = &tasks[i]
		}
	}
	if latest == nil {
		return ""
	}
	return fmt.Sprintf("task %s %s: %s", latest.ID, latest.Status.State, latest.Status.Err)
}

// poll looks at the running tasks every PollInterval and notifies when
// the tasks of a tracked service changed.
func (r *Runtime) poll() {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("swarm runtime: panic polling the tasks; changes now wait for the Manager's passes", zap.Any("panic", p), zap.Stack("stack"))
		}
	}()
	tick := time.NewTicker(r.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(r.ctx, engineTimeout)
		running, err := r.runningTasks(ctx, "")
		cancel()
		if err != nil {
			r.log.Warn("swarm runtime: polling the tasks failed", zap.Error(err))
			continue
		}
		if r.tasksChanged(running) {
			r.Notify()
		}
	}
}

// tasksChanged reports whether the running tasks differ from those known.
func (r *Runtime) tasksChanged(running map[string][]string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, svc := range r.services {
		if !slices.Equal(slices.Sorted(maps.Keys(svc.tasks)), running[svc.id]) {
			return true
		}
	}
	return false
}

// Remove removes the version's service; Swarm stops its tasks.
func (r *Runtime) Remove(ctx context.Context, model, version string) error {
	key := runtime.VersionKey{Model: model, Version: version}
	r.mu.Lock()
	svc := r.services[key]
	r.mu.Unlock()
	if svc == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, engineTimeout)
	defer cancel()
	if err := r.engine.ServiceRemove(ctx, svc.id); err != nil && !client.IsErrNotFound(err) {
		return err
	}
	r.mu.Lock()
	delete(r.services, key)
	r.mu.Unlock()
	r.log.Info("swarm runtime: removed a service", zap.String("model", model), zap.String("version", version), zap.String("service", svc.id))
	return nil
}

// Running returns the versions whose services this Runtime knows: those it
// created and those it adopted.
func (r *Runtime) Running(context.Context) ([]runtime.VersionKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return runtime.SortedKeys(r.services), nil
}

// Close stops polling and probing; the services keep running, for the next
// Runtime to adopt. Ensure fails afterwards.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return r.engine.Close()
}

// serviceName names a version's service: readable, unique per owner and
// version (the hash tells apart versions that sanitize alike), and within
// Swarm's rules (letters, digits, '-', '_', at most 63 characters).
func (o *Options) serviceName(model, version string) string {
	sum := sha256.Sum256([]byte(model + "\x00" + version))
	clean := strings.NewReplacer(".", "-").Replace(model + "-" + version)
	name := o.Owner + "-" + clean
	suffix := "-" + hex.EncodeToString(sum[:3])
	if len(name)+len(suffix) > 63 {
		name = name[:63-len(suffix)]
	}
	return name + suffix
}

// serviceSpec is the service of mv.
func (o *Options) serviceSpec(mv state.ModelVersion) swarm.ServiceSpec {
	rs := mv.Runtime
	env := make([]string, 0, len(rs.Env)+4)
	for _, k := range slices.Sorted(maps.Keys(rs.Env)) {
		env = append(env, k+"="+rs.Env[k])
	}
	env = append(env,
		"SLOPROXY_RPC_ADDR=0.0.0.0:"+strconv.Itoa(o.ContainerPort),
		"SLOPROXY_MODEL_NAME="+mv.Model,
		"SLOPROXY_MODEL_VERSION="+mv.Version,
		rpc.SecretEnv+"="+rpc.DeriveSecret(o.RPCKey, mv.Model, mv.Version),
	)
	res := &swarm.Resources{NanoCPUs: int64(rs.CPUs * 1e9), MemoryBytes: rs.MemoryBytes}
	switch {
	case len(rs.DeviceIDs) > 0:
		for _, id := range rs.DeviceIDs {
			res.GenericResources = append(res.GenericResources, swarm.GenericResource{NamedResourceSpec: &swarm.NamedGenericResource{Kind: o.GPUResource, Value: id}})
		}
	case rs.GPUs > 0:
		res.GenericResources = []swarm.GenericResource{{DiscreteResourceSpec: &swarm.DiscreteGenericResource{Kind: o.GPUResource, Value: int64(rs.GPUs)}}}
	}
	placement := &swarm.Placement{Constraints: slices.Clone(o.Constraints)}
	for _, p := range o.Preferences {
		placement.Preferences = append(placement.Preferences, swarm.PlacementPreference{Spread: &swarm.SpreadOver{SpreadDescriptor: p}})
	}
	var networks []swarm.NetworkAttachmentConfig
	if o.Network != "" {
		networks = []swarm.NetworkAttachmentConfig{{Target: o.Network}}
	}
	grace := o.StopGracePeriod
	replicas := uint64(max(mv.Replicas, 0))
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: o.serviceName(mv.Model, mv.Version)},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:           rs.Image,
				Env:             env,
				ReadOnly:        !o.WritableRoot,
				Mounts:          []mount.Mount{{Type: mount.TypeTmpfs, Target: "/tmp"}},
				StopGracePeriod: &grace,
				CapabilityDrop:  []string{"ALL"},
			},
			Resources: &swarm.ResourceRequirements{
				Limits:       &swarm.Limit{NanoCPUs: res.NanoCPUs, MemoryBytes: res.MemoryBytes},
				Reservations: res,
			},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny},
			Placement:     placement,
			Networks:      networks,
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		// One task at a time, the new one up before the old one stops;
		// a failed update goes back to the previous spec.
		UpdateConfig: &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStartFirst, FailureAction: swarm.UpdateFailureActionRollback,
			Monitor: 5 * time.Second},
		RollbackConfig: &swarm.UpdateConfig{Parallelism: 1, Order: swarm.UpdateOrderStartFirst},
		EndpointSpec: &swarm.EndpointSpec{Ports: []swarm.PortConfig{{Protocol: swarm.PortConfigProtocolTCP,
			TargetPort: uint32(o.ContainerPort), PublishMode: swarm.PortConfigPublishModeHost}}},
	}
	labels := map[string]string{
		docker.OwnerLabel:   o.Owner,
		docker.ModelLabel:   mv.Model,
		docker.VersionLabel: mv.Version,
		docker.SpecLabel:    specHash(spec),
	}
	spec.Labels = labels
	spec.TaskTemplate.ContainerSpec.Labels = labels
	return spec
}

// specHash names what a service runs, its replica count aside: equal
// specs, equal hashes.
func specHash(s swarm.ServiceSpec) string {
	s.Mode = swarm.ServiceMode{}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a struct of strings, numbers and maps of strings always encodes
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
