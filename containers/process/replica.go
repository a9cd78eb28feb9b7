package process

import (
	"context"
	"errors"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// outputDrain bounds the wait for the rest of a process's output once its
// whole group is dead; only a process that left the group (setsid) can keep
// the pipe open longer.
const outputDrain = time.Second

// groupPoll is how often a stopping replica checks whether its process
// group is empty, once the group's leader has exited.
const groupPoll = 50 * time.Millisecond

// spec is what a replica runs: the parts of a ModelVersion that, changed,
// require a new process.
type spec struct {
	command []string
	env     map[string]string
}

func specOf(mv state.ModelVersion) spec {
	return spec{command: slices.Clone(mv.Runtime.Command), env: maps.Clone(mv.Runtime.Env)}
}

func (s spec) equal(o spec) bool {
	return slices.Equal(s.command, o.command) && maps.Equal(s.env, o.env)
}

// replica is one replica: a goroutine that runs its process and restarts
// it when it exits, until stopped.
type replica struct {
	rt    *Runtime
	key   runtime.VersionKey
	index int
	port  int
	addr  string
	spec  spec
	env   []string // the process's whole environment
	log   *zap.Logger

	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned: the process and its group are gone

	restarter runtime.Restarter

	mu  sync.Mutex // guards pid
	pid int
}

// startReplica starts replica index of key running s on port, which it
// takes over; prev, if not nil, is the stopped replica it replaces on that
// port, whose exit it waits for before starting its process. r.mu is held.
func (r *Runtime) startReplica(key runtime.VersionKey, index int, s spec, port int, prev *replica) *replica {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ctx, cancel := context.WithCancel(r.ctx)
	rep := &replica{
		rt: r, key: key, index: index, port: port, addr: addr, spec: s,
		restarter: runtime.Restarter{Backoff: runtime.Backoff{Min: r.opts.MinBackoff, Max: r.opts.MaxBackoff, ResetAfter: r.opts.ResetAfter},
			Metrics: r.opts.Metrics, Key: key},
		env:    environ(key, addr, s.env, r.opts.PassEnv),
		log:    r.log.With(zap.String("model", key.Model), zap.String("version", key.Version), zap.Int("replica", index), zap.String("addr", addr)),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	r.ports[port] = rep
	r.wg.Go(func() { rep.run(ctx, prev) })
	return rep
}

// stop asks the replica to stop; done is closed once it has. Calling it
// again does nothing.
func (rep *replica) stop() { rep.cancel() }

func (rep *replica) status() ReplicaStatus {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return ReplicaStatus{Index: rep.index, Addr: rep.addr, PID: rep.pid, Restarts: rep.restarter.Restarts()}
}

func (rep *replica) setPID(pid int) {
	rep.mu.Lock()
	rep.pid = pid
	rep.mu.Unlock()
}

// run runs the process until ctx ends, restarting it with backoff whenever
// it exits. With prev, it first waits for prev to exit, since prev holds
// the port: prev was stopped, so that takes at most its grace period.
func (rep *replica) run(ctx context.Context, prev *replica) {
	defer close(rep.done)
	// Before done: who waits for done may claim the port again.
	defer rep.rt.releasePort(rep.port, rep)
	if prev != nil {
		<-prev.done
		if ctx.Err() != nil {
			return
		}
	}
	var last exit
	stopped := false // the last run ended because ctx did
	rep.restarter.Run(ctx, rep.log, func(ctx context.Context) {
		last = rep.runOnce(ctx)
		stopped = ctx.Err() != nil
	}, func(up, wait time.Duration) {
		msg := "model process exited; restarting"
		if !last.started {
			msg = "model process failed to start; retrying"
		}
		rep.log.Warn(msg, append(last.fields(),
			zap.Duration("uptime", up), zap.Int("restarts", rep.restarter.Restarts()), zap.Duration("backoff", wait))...)
	})
	if stopped {
		rep.log.Info("model process stopped", last.fields()...)
	}
}

// watchScript is run by /bin/sh as each replica's process: it starts a
// watcher in the background, in the process group the replica leads, then
// becomes the model's command (exec: the replica's process is the model's
// own, with its PID). The watcher reads file descriptor 3, the read end of
// Runtime.aliveR, which reaches end of file only when every copy of the
// write end is closed: when the proxy is gone, killed with SIGKILL
// included. It then kills the whole group, grandchildren included (the
// binary `go run` built, a shell script's children), which the
// parent-death signal, sent to the direct child only, would miss. The
// model does not get the descriptor.
const watchScript = `(read -r _ <&3; kill -KILL 0) & exec "$@" 3<&-`

// command returns the command that runs argv as a replica: under
// watchScript when the Runtime has its pipe, argv itself otherwise. A
// program that cannot be found fails here, as exec.Command's would.
func (r *Runtime) command(argv []string) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	if strings.ContainsRune(argv[0], os.PathSeparator) {
		path := argv[0]
		if !filepath.IsAbs(path) && r.opts.Dir != "" {
			path = filepath.Join(r.opts.Dir, path)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, err
		}
	}
	if r.aliveR != nil {
		cmd = exec.Command("/bin/sh", append([]string{"-c", watchScript, "sloproxy-model", cmd.Path}, argv[1:]...)...)
		cmd.ExtraFiles = []*os.File{r.aliveR}
	}
	cmd.Dir = r.opts.Dir
	cmd.SysProcAttr = sysProcAttr()
	return cmd, nil
}

// exit is how one run of the process ended.
type exit struct {
	started bool
	pid     int
	err     error    // the start error, or Wait's
	output  []string // its last lines of output
}

func (ex exit) fields() []zap.Field {
	f := []zap.Field{zap.Strings("output", ex.output)}
	if ex.started {
		f = append(f, zap.Int("pid", ex.pid))
	}
	switch {
	case ex.err == nil && ex.started:
		f = append(f, zap.String("exit", "exit status 0"))
	case ex.err != nil:
		var ee *exec.ExitError
		if errors.As(ex.err, &ee) {
			f = append(f, zap.String("exit", ee.ProcessState.String()))
		} else {
			f = append(f, zap.Error(ex.err))
		}
	}
	return f
}

// runOnce starts the process and waits for it to exit, or stops it when
// ctx ends. Either way, nothing of its process group is left when it
// returns.
func (rep *replica) runOnce(ctx context.Context) exit {
	// One pipe for stdout and stderr keeps their lines in order. We make it
	// rather than let exec copy from it: exec's Wait would wait for the
	// pipe to close, which a grandchild still holding it delays forever.
	pr, pw, err := os.Pipe()
	if err != nil {
		return exit{err: err}
	}
	argv := rep.spec.command
	cmd, err := rep.rt.command(argv)
	if err != nil {
		_ = pw.Close()
		_ = pr.Close()
		return exit{err: err}
	}
	cmd.Env = rep.env
	cmd.Stdout, cmd.Stderr = pw, pw
	err = rep.rt.starter.start(cmd)
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		return exit{err: err}
	}
	pid := cmd.Process.Pid
	rep.setPID(pid)
	defer rep.setPID(0)
	rep.log.Info("model process started", zap.Int("pid", pid), zap.Strings("command", argv))

	tail := newTail(rep.rt.opts.TailLines)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		rep.copyOutput(pr, tail)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		werr = rep.terminate(pid, waited)
	}
	// The leader is gone. Whatever it left in its group would hold the
	// port, which the restarted replica needs, and the output pipe.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	drain := time.NewTimer(outputDrain)
	select {
	case <-copied:
	case <-drain.C:
	}
	drain.Stop()
	_ = pr.Close() // ends copyOutput if a process outside the group still holds the pipe
	<-copied
	return exit{started: true, pid: pid, err: werr, output: tail.Lines()}
}

// terminate stops the process group led by pid: SIGTERM, then SIGKILL to
// what is left after the grace period. It returns the leader's Wait error.
// It waits for the whole group, not only the leader, since a leader such as
// a shell may exit at once while the model it runs shuts down cleanly.
func (rep *replica) terminate(pid int, waited <-chan error) error {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	grace := time.NewTimer(rep.rt.opts.GracePeriod)
	defer grace.Stop()
	var werr error
	select {
	case werr = <-waited:
	case <-grace.C:
		rep.log.Warn("model process did not stop within the grace period; killing it",
			zap.Int("pid", pid), zap.Duration("grace_period", rep.rt.opts.GracePeriod))
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return <-waited
	}
	tick := time.NewTicker(groupPoll)
	defer tick.Stop()
	for groupAlive(pid) {
		select {
		case <-tick.C:
		case <-grace.C:
			return werr // runOnce kills the rest
		}
	}
	return werr
}
