// Package process is the process runtime: it runs each replica of a model
// version as a local child process, the embedded default and the runtime of
// tests without Docker.
//
// A replica is the model version's command (state.RuntimeSpec.Command, with
// its Env) run with
//
//	SLOPROXY_RPC_ADDR=127.0.0.1:PORT
//	SLOPROXY_MODEL_NAME=<model>
//	SLOPROXY_MODEL_VERSION=<version>
//
// in its environment (these three win over the same names in Env), on a
// port of its own from Options.BasePort upward. Of the proxy's own
// environment a model process gets only PATH, HOME, USER, LOGNAME, SHELL,
// LANG, LANGUAGE, LC_*, TZ, TMPDIR, PYTHONPATH, PYTHONHOME, VIRTUAL_ENV,
// LD_LIBRARY_PATH, GOROOT, GOPATH, GOCACHE, GOMODCACHE, GOFLAGS,
// GOTOOLCHAIN, XDG_CACHE_HOME, XDG_CONFIG_HOME, CUDA_VISIBLE_DEVICES,
// NVIDIA_VISIBLE_DEVICES and the names in Options.PassEnv: never
// SLOPROXY_ADMIN_TOKEN or other secrets the proxy holds. Replicas listen on loopback
// only, so their addresses are reachable from this machine alone: the
// process runtime serves one proxy, or proxies on one machine.
//
// A replica whose process exits, for any reason, is started again on the
// same port, so its address (registered in the state) stays valid, after an
// exponential backoff (Options.MinBackoff doubling to MaxBackoff, back to
// MinBackoff once a process stayed up for ResetAfter). Each exit is logged
// with the process's exit status and its last lines of output.
//
// Each replica's process leads a process group of its own, and stopping a
// replica signals the whole group: SIGTERM, then SIGKILL after
// Options.GracePeriod. So a command such as `go run ./model`, whose model
// is a grandchild of the proxy, stops entirely, and when the process a
// replica started dies alone (kill -9), whatever it left running in its
// group is killed before the restart, since it would hold the port.
//
// Model processes die with the proxy, however it dies (SIGKILL included):
// the direct child by its parent-death signal (Linux), and the whole group
// by a watcher /bin/sh runs beside the model (see watchScript), so a
// killed proxy leaves no process holding a port.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// DefaultBasePort is the first port tried for replicas: model containers'
// RPC from 7000 up, as in Clipper.
const DefaultBasePort = 7000

// ErrClosed is returned by Ensure after Close.
var ErrClosed = errors.New("process runtime closed")

// Options configure a Runtime. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// BasePort is the first port tried for a replica. Ports that this
	// Runtime holds, or that something else listens on (it tries to listen
	// on 127.0.0.1:port), are skipped. 0 means DefaultBasePort.
	BasePort int
	// Dir is the replicas' working directory, against which a relative
	// command ("./model") and relative arguments resolve; serve passes the
	// config file's directory. Empty means the proxy's working directory.
	Dir string
	// GracePeriod is how long a replica's processes have to exit after
	// SIGTERM before they get SIGKILL. 0 means 5 s.
	GracePeriod time.Duration
	// MinBackoff is the wait before restarting a replica after its first
	// exit; the wait doubles with each further exit up to MaxBackoff. 0
	// means 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// ResetAfter is how long a process must stay up for the next restart
	// to wait MinBackoff again. 0 means 30 s.
	ResetAfter time.Duration
	// TailLines is how many of a process's last lines of output are kept,
	// to log when it exits. 0 means 20.
	TailLines int
	// Output receives every line the replicas print (stdout and stderr),
	// each prefixed with "model/version#index: "; writes are serialized.
	// nil means the lines are logged at debug level.
	Output io.Writer
	// Logger receives starts, exits and restarts. nil means no logs.
	Logger *zap.Logger
	// Metrics counts restarts. nil means none are counted.
	Metrics *runtime.Metrics
	// PassEnv names variables of the proxy's environment passed to the
	// model processes besides those the package comment lists. Empty
	// means those only.
	PassEnv []string
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.BasePort <= 0 {
		o.BasePort = DefaultBasePort
	}
	def(&o.GracePeriod, 5*time.Second)
	b := runtime.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff, ResetAfter: o.ResetAfter}.WithDefaults()
	o.MinBackoff, o.MaxBackoff, o.ResetAfter = b.Min, b.Max, b.ResetAfter
	if o.TailLines <= 0 {
		o.TailLines = 20
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Runtime runs model versions' replicas as child processes. Create it with
// New and stop it with Close, which stops every replica; a Runtime that is
// not closed leaves its processes and goroutines running.
//
// Its methods are safe for concurrent use. None of them holds a lock while
// a process starts or stops: Ensure and Remove only decide which replicas
// run and hand the work to the replicas' goroutines, so a scale-down, a
// Remove or a Close during a scale-up of slow-starting models takes effect
// at once.
type Runtime struct {
	opts Options
	log  *zap.Logger

	// ctx is the parent of every replica's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the replicas' goroutines, including those still stopping
	// after Ensure or Remove returned.
	wg sync.WaitGroup

	// mu guards closed, groups and ports. It is never held while waiting
	// for a process.
	mu     sync.Mutex
	closed bool
	groups map[runtime.VersionKey]*group
	ports  map[int]*replica // the replica holding each port, from its start until its goroutine ends

	// outMu serializes writes to opts.Output.
	outMu sync.Mutex

	// starter starts every process, from a thread that lives as long as
	// the Runtime (see starter).
	starter *starter
	// alive is a pipe whose read end every replica's process group gets
	// as file descriptor 3 and whose write end only this process holds:
	// when the proxy dies, however it dies, the read end sees end of file
	// and the group's watcher kills the group (see watchScript). Both nil
	// if the pipe could not be made; the parent-death signal then is the
	// only guard.
	aliveR, aliveW *os.File
	closeOnce      sync.Once
}

var _ runtime.Runtime = (*Runtime)(nil)

// group is the replicas of one model version, by index.
type group struct {
	replicas []*replica
}

// New returns a Runtime running no replicas.
func New(opts Options) *Runtime {
	opts.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{
		opts:    opts,
		log:     opts.Logger,
		ctx:     ctx,
		cancel:  cancel,
		groups:  make(map[runtime.VersionKey]*group),
		ports:   make(map[int]*replica),
		starter: newStarter(),
	}
	var err error
	if r.aliveR, r.aliveW, err = os.Pipe(); err != nil {
		r.log.Warn("process runtime: no pipe to tell model processes that the proxy died; only the parent-death signal guards them", zap.Error(err))
	}
	return r
}

// Ensure makes mv's replicas run as it specifies and returns their
// addresses, in replica order. It starts missing replicas, stops extra ones
// (the highest indexes), and replaces those whose command or environment
// changed; a replacement keeps its replica's port, and its process starts
// once the old one has exited.
//
// Ensure waits for no process: the addresses are where the replicas
// listen, or will once their command starts, and the dispatcher's
// heartbeats tell when they do. Replicas that go keep their ports until
// they have exited. A command that fails at once is restarted with
// backoff, and Ensure still returns its address.
func (r *Runtime) Ensure(_ context.Context, mv state.ModelVersion) ([]string, error) {
	if mv.Runtime.Kind != state.RuntimeProcess {
		return nil, fmt.Errorf("model %q version %q: runtime kind %q is not %q", mv.Model, mv.Version, mv.Runtime.Kind, state.RuntimeProcess)
	}
	if len(mv.Runtime.Command) == 0 || mv.Runtime.Command[0] == "" {
		return nil, fmt.Errorf("model %q version %q: runtime.command is empty", mv.Model, mv.Version)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	key := runtime.VersionKey{Model: mv.Model, Version: mv.Version}
	g := r.groups[key]
	if g == nil {
		g = &group{}
		r.groups[key] = g
	}
	want := specOf(mv)
	n := max(mv.Replicas, 0)

	// Scale down first, so that no replacement below starts for a replica
	// about to go.
	if len(g.replicas) > n {
		for _, rep := range g.replicas[n:] {
			rep.stop()
		}
		g.replicas = slices.Clone(g.replicas[:n])
	}
	for i, rep := range g.replicas {
		if !rep.spec.equal(want) {
			rep.stop()
			g.replicas[i] = r.startReplica(key, i, want, rep.port, rep)
		}
	}
	for i := len(g.replicas); i < n; i++ {
		port, err := r.claimPort()
		if err != nil {
			return nil, fmt.Errorf("model %q version %q replica %d: %w", key.Model, key.Version, i, err)
		}
		g.replicas = append(g.replicas, r.startReplica(key, i, want, port, nil))
	}
	addrs := make([]string, len(g.replicas))
	for i, rep := range g.replicas {
		addrs[i] = rep.addr
	}
	return addrs, nil
}

// Remove stops every replica of a model version and waits for them to
// exit. Removing a version that runs nothing is not an error. If ctx ends
// first, Remove returns ctx's error and the replicas go on stopping; Close
// waits for them. The wait holds no lock: Ensure, Remove and Close of other
// versions, and Close, go ahead meanwhile.
func (r *Runtime) Remove(ctx context.Context, model, version string) error {
	key := runtime.VersionKey{Model: model, Version: version}
	r.mu.Lock()
	g := r.groups[key]
	delete(r.groups, key)
	var reps []*replica
	if g != nil {
		reps = g.replicas
		for _, rep := range reps {
			rep.stop()
		}
	}
	r.mu.Unlock()
	return waitStopped(ctx, reps)
}

// Running returns the model versions that have replicas, sorted.
func (r *Runtime) Running(context.Context) ([]runtime.VersionKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return runtime.SortedKeys(r.groups), nil
}

// ReplicaStatus describes one replica.
type ReplicaStatus struct {
	// Index is the replica's position among its version's replicas.
	Index int
	// Addr is where the replica listens (host:port).
	Addr string
	// PID is the process's id; 0 while none runs (between an exit and the
	// restart).
	PID int
	// Restarts counts the times its process was started again after
	// exiting.
	Restarts int
}

// Status returns the replicas of a model version, by index; nil if it runs
// none.
func (r *Runtime) Status(model, version string) []ReplicaStatus {
	r.mu.Lock()
	g := r.groups[runtime.VersionKey{Model: model, Version: version}]
	var reps []*replica
	if g != nil {
		reps = slices.Clone(g.replicas)
	}
	r.mu.Unlock()
	var out []ReplicaStatus
	for _, rep := range reps {
		out = append(out, rep.status())
	}
	return out
}

// Close stops every replica, in parallel, and waits for them to exit: at
// most Options.GracePeriod after it is called, and a little, whatever is
// starting or stopping. Ensure fails afterwards.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	clear(r.groups)
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.closeOnce.Do(func() {
		r.starter.close()
		if r.aliveW != nil {
			_ = r.aliveW.Close()
			_ = r.aliveR.Close()
		}
	})
	return nil
}

// waitStopped waits until reps have exited or ctx ends.
func waitStopped(ctx context.Context, reps []*replica) error {
	for _, rep := range reps {
		select {
		case <-rep.done:
		case <-ctx.Done():
			return fmt.Errorf("waiting for replica %s to stop: %w", rep.addr, ctx.Err())
		}
	}
	return nil
}
