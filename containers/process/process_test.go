package process_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/process"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// TestEnsure starts replicas of a relative command, run from Options.Dir
// with the version's Env, and checks that each answers on its own port with
// the model name and version the runtime put in its environment.
func TestEnsure(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{Dir: dirOf(noop(t))})
	mv := version("3", 3, "sh", "-c", `exec ./noop --input-type "$INPUT_TYPE"`)
	mv.Runtime.Env = map[string]string{"INPUT_TYPE": "string", "SLOPROXY_MODEL_NAME": "overridden"}
	addrs := ensure(t, rt, mv)
	if len(slices.Compact(slices.Sorted(slices.Values(addrs)))) != 3 {
		t.Fatalf("addresses %v are not distinct", addrs)
	}
	for _, a := range addrs {
		if host, _, _ := net.SplitHostPort(a); host != "127.0.0.1" {
			t.Errorf("address %s: not on loopback", a)
		}
		if p := port(t, a); p < basePort {
			t.Errorf("address %s: below the base port %d", a, basePort)
		}
		h := hello(t, a)
		if h.Model != "echo" || h.ModelVersion != "3" {
			t.Errorf("%s: HELLO names %s/%s; want echo/3 from the environment", a, h.Model, h.ModelVersion)
		}
		if h.InputType != rpc.String {
			t.Errorf("%s: HELLO input type %v; want string, from the version's Env", a, h.InputType)
		}
	}
	// Nothing changed: the same replicas.
	before := pids(t, rt, mv)
	if again := ensure(t, rt, mv); !slices.Equal(again, addrs) {
		t.Errorf("second Ensure = %v; want %v", again, addrs)
	}
	if after := pids(t, rt, mv); !slices.Equal(after, before) {
		t.Errorf("second Ensure changed the processes: %v, then %v", before, after)
	}
}

// TestSkipsPortsInUse checks that a port something else listens on is not
// given to a replica.
func TestSkipsPortsInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a port in use: ours
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	base := ln.Addr().(*net.TCPAddr).Port
	rt, _ := newRuntime(t, process.Options{BasePort: base})
	addrs := ensure(t, rt, version("1", 1, noop(t)))
	if p := port(t, addrs[0]); p == base {
		t.Fatalf("replica got port %d, which is in use", p)
	}
	hello(t, addrs[0])
}

// TestRestartAfterKill kills a replica's process with SIGKILL and measures
// how long until it answers again, on the same port.
func TestRestartAfterKill(t *testing.T) {
	rt, logs := newRuntime(t, process.Options{})
	mv := version("1", 2, noop(t))
	addrs := ensure(t, rt, mv)
	for _, a := range addrs {
		hello(t, a)
	}
	old := pids(t, rt, mv)
	start := time.Now()
	if err := syscall.Kill(old[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a new process", func() bool {
		s := rt.Status(mv.Model, mv.Version)[1]
		return s.PID != 0 && s.PID != old[1]
	})
	h := hello(t, addrs[1])
	took := time.Since(start)
	t.Logf("killed replica answered again after %v (backoff %v)", took, 100*time.Millisecond)
	if h.Model != "echo" {
		t.Errorf("HELLO model %q", h.Model)
	}
	st := rt.Status(mv.Model, mv.Version)
	if st[1].Addr != addrs[1] || st[1].Restarts != 1 {
		t.Errorf("status %+v; want address %s, 1 restart", st[1], addrs[1])
	}
	if st[0].PID != old[0] || st[0].Restarts != 0 {
		t.Errorf("the other replica changed: %+v", st[0])
	}
	exits := logged(logs, "model process exited; restarting")
	if len(exits) != 1 || exits[0].ContextMap()["exit"] != "signal: killed" {
		t.Errorf("logged exits %v; want one, signal: killed", exits)
	}
}

// TestScale scales 2 → 3 → 1 replicas: the first ones keep their process
// and address, the last ones stop.
func TestScale(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	mv := version("1", 2, noop(t))
	two := ensure(t, rt, mv)
	first := pids(t, rt, mv)

	mv.Replicas = 3
	three := ensure(t, rt, mv)
	if !slices.Equal(three[:2], two) {
		t.Fatalf("scaling up moved replicas: %v, then %v", two, three)
	}
	for _, a := range three {
		hello(t, a)
	}
	all := pids(t, rt, mv)
	if !slices.Equal(all[:2], first) {
		t.Errorf("scaling up restarted replicas: %v, then %v", first, all)
	}

	mv.Replicas = 1
	one := ensure(t, rt, mv)
	if one[0] != two[0] {
		t.Errorf("scaling down kept %s; want replica 0, %s", one[0], two[0])
	}
	hello(t, one[0])
	// Ensure does not wait for the extra replicas to exit.
	for i, pid := range all[1:] {
		testutil.Eventually(t, 10*time.Second, "an extra replica exited", func() bool { return gone(pid) })
		a := three[i+1]
		testutil.Eventually(t, 10*time.Second, "an extra replica's port freed", func() bool { return portFree(a) })
	}
	if got := pids(t, rt, mv); !slices.Equal(got, all[:1]) {
		t.Errorf("after scaling down, processes %v; want %v", got, all[:1])
	}
}

// TestReplace changes a version's environment: every replica is replaced by
// one with the new environment, on the same port.
func TestReplace(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	mv := version("1", 2, "sh", "-c", `exec "$NOOP" --name "$NAME"`)
	mv.Runtime.Env = map[string]string{"NOOP": noop(t), "NAME": "before"}
	addrs := ensure(t, rt, mv)
	old := pids(t, rt, mv)
	mv.Runtime.Env = map[string]string{"NOOP": noop(t), "NAME": "after"}
	if got := ensure(t, rt, mv); !slices.Equal(got, addrs) {
		t.Fatalf("replaced replicas moved: %v, then %v", addrs, got)
	}
	// Ensure returns before the replacements start: each starts once the
	// process it replaces, which holds the port, has exited.
	for _, pid := range old {
		testutil.Eventually(t, 10*time.Second, "a replaced process reaped", func() bool { return isReaped(pid) })
	}
	for _, a := range addrs {
		if h := hello(t, a); h.Model != "after" {
			t.Errorf("%s: HELLO model %q; want after", a, h.Model)
		}
	}
}

// TestRemove stops every replica: processes reaped, ports free.
func TestRemove(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	mv := version("1", 2, noop(t))
	addrs := ensure(t, rt, mv)
	for _, a := range addrs {
		hello(t, a)
	}
	ps := pids(t, rt, mv)
	if err := rt.Remove(t.Context(), mv.Model, mv.Version); err != nil {
		t.Fatal(err)
	}
	for _, pid := range ps {
		reaped(t, pid)
	}
	for _, a := range addrs {
		if !portFree(a) {
			t.Errorf("port %s still in use", a)
		}
	}
	if s := rt.Status(mv.Model, mv.Version); s != nil {
		t.Errorf("Status after Remove = %+v", s)
	}
	if r, _ := rt.Running(t.Context()); len(r) != 0 {
		t.Errorf("Running after Remove = %v", r)
	}
	if err := rt.Remove(t.Context(), mv.Model, mv.Version); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// TestProcessGroup runs the model as a grandchild (the way `go run` does):
// killing the replica's own process kills the model too before the restart,
// which then gets the port, and Remove stops the model as well.
func TestProcessGroup(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	pidFile := filepath.Join(t.TempDir(), "pid")
	mv := version("1", 1, "sh", "-c", `"$NOOP" & echo $! > "$PID_FILE"; wait`)
	mv.Runtime.Env = map[string]string{"NOOP": noop(t), "PID_FILE": pidFile}
	addr := ensure(t, rt, mv)[0]
	grandchild := func() int {
		var pid int
		testutil.Eventually(t, 10*time.Second, "the model's pid", func() bool {
			b, _ := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return pid != 0
		})
		_ = os.Remove(pidFile)
		return pid
	}
	model := grandchild()
	hello(t, addr)

	shell := pids(t, rt, mv)[0]
	if err := syscall.Kill(shell, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := grandchild()
	if !gone(model) {
		t.Errorf("the model %d outlived its replica's process", model)
	}
	hello(t, addr)

	if err := rt.Remove(t.Context(), mv.Model, mv.Version); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the model stopped", func() bool { return gone(next) })
	if !portFree(addr) {
		t.Errorf("port %s still in use", addr)
	}
}

// TestGracePeriod stops a process that ignores SIGTERM: it is killed after
// the grace period.
func TestGracePeriod(t *testing.T) {
	const grace = 300 * time.Millisecond
	rt, logs := newRuntime(t, process.Options{GracePeriod: grace})
	mv := version("1", 1, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`)
	ensure(t, rt, mv)
	testutil.Eventually(t, 10*time.Second, "started", func() bool { return len(logs.FilterMessage("model output").All()) > 0 })
	pid := pids(t, rt, mv)[0]
	start := time.Now()
	if err := rt.Remove(t.Context(), mv.Model, mv.Version); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < grace {
		t.Errorf("Remove took %v; want at least the grace period, %v", took, grace)
	}
	reaped(t, pid)
	if len(logged(logs, "model process did not stop within the grace period; killing it")) != 1 {
		t.Errorf("the kill after the grace period was not logged")
	}
}

// TestCrashLoop runs commands that fail at once: Ensure still returns their
// addresses, every exit is logged with its status and output, and the
// backoff logged with each exit doubles from MinBackoff.
func TestCrashLoop(t *testing.T) {
	for _, c := range []struct {
		name    string
		command []string
		msg     string
		check   func(t *testing.T, e map[string]any)
	}{
		{
			name:    "exits",
			command: []string{"sh", "-c", "echo starting; echo boom >&2; exit 3"},
			msg:     "model process exited; restarting",
			check: func(t *testing.T, e map[string]any) {
				if e["exit"] != "exit status 3" {
					t.Errorf("exit = %v; want exit status 3", e["exit"])
				}
				if out, _ := e["output"].([]any); len(out) != 2 || out[0] != "starting" || out[1] != "boom" {
					t.Errorf("output = %#v; want [starting boom]", e["output"])
				}
			},
		},
		{
			name:    "does not exist",
			command: []string{"./no-such-model"},
			msg:     "model process failed to start; retrying",
			check: func(t *testing.T, e map[string]any) {
				if err, _ := e["error"].(string); !strings.Contains(err, "no such file") {
					t.Errorf("error = %v; want no such file", e["error"])
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out testutil.Buffer
			rt, logs := newRuntime(t, process.Options{Dir: t.TempDir(), Output: &out, MinBackoff: 10 * time.Millisecond})
			mv := version("1", 1, c.command...)
			ensure(t, rt, mv)
			testutil.Eventually(t, 10*time.Second, "three failures logged", func() bool { return len(logged(logs, c.msg)) >= 3 })
			if restarts := rt.Status(mv.Model, mv.Version)[0].Restarts; restarts < 2 {
				t.Errorf("%d restarts after three failures; want at least 2", restarts)
			}
			for i, e := range logged(logs, c.msg)[:3] {
				m := e.ContextMap()
				c.check(t, m)
				if want := time.Duration(10<<i) * time.Millisecond; m["backoff"] != want {
					t.Errorf("failure %d: backoff %v; want %v, doubling from MinBackoff", i, m["backoff"], want)
				}
			}
			if c.name == "exits" && !strings.Contains(out.String(), "echo/1#0: boom\n") {
				t.Errorf("Output got %q; want the lines prefixed with echo/1#0", out.String())
			}
		})
	}
}

// TestClose stops everything, and Ensure fails afterwards.
func TestClose(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	a := ensure(t, rt, version("1", 1, noop(t)))
	b := ensure(t, rt, version("2", 2, noop(t)))
	ps := append(pids(t, rt, version("1", 1)), pids(t, rt, version("2", 2))...)
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range ps {
		reaped(t, pid)
	}
	for _, addr := range append(a, b...) {
		if !portFree(addr) {
			t.Errorf("port %s still in use", addr)
		}
	}
	if _, err := rt.Ensure(t.Context(), version("1", 1, noop(t))); !errors.Is(err, process.ErrClosed) {
		t.Errorf("Ensure after Close: %v; want ErrClosed", err)
	}
}

// TestEnsureCanceled: a ctx that ends while replicas stop makes Ensure
// return; the replicas stop anyway.
func TestEnsureCanceled(t *testing.T) {
	rt, logs := newRuntime(t, process.Options{GracePeriod: 200 * time.Millisecond})
	mv := version("1", 2, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`)
	ensure(t, rt, mv)
	testutil.Eventually(t, 10*time.Second, "started", func() bool { return len(logs.FilterMessage("model output").All()) == 2 })
	ps := pids(t, rt, mv)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := rt.Remove(ctx, mv.Model, mv.Version); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Remove with a short ctx: %v; want DeadlineExceeded", err)
	}
	testutil.Eventually(t, 10*time.Second, "replicas stopped", func() bool { return gone(ps[0]) && gone(ps[1]) })
}

// TestScaleDownDoesNotWait: scaling down replicas that ignore SIGTERM,
// under a grace period that never runs out in the test, returns at once;
// the replicas that go keep stopping in the background.
func TestScaleDownDoesNotWait(t *testing.T) {
	rt, logs := newRuntime(t, process.Options{GracePeriod: time.Hour})
	mv := version("1", 2, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`)
	ensure(t, rt, mv)
	testutil.Eventually(t, 10*time.Second, "started", func() bool { return len(logs.FilterMessage("model output").All()) == 2 })
	ps := pids(t, rt, mv)
	// The processes outlive the test's own kill only if something is wrong.
	t.Cleanup(func() {
		for _, pid := range ps {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mv.Replicas = 1
	if _, err := rt.Ensure(ctx, mv); err != nil {
		t.Fatalf("Ensure scaling down a replica that ignores SIGTERM: %v; want it to return without waiting", err)
	}
	if s := rt.Status(mv.Model, mv.Version); len(s) != 1 {
		t.Fatalf("Status after scaling down: %+v; want one replica", s)
	}
	if err := rt.Remove(ctx, "other", "1"); err != nil {
		t.Fatalf("Remove of another version while one stops: %v", err)
	}
	// The test ends the grace period itself.
	for _, pid := range ps {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range ps {
		reaped(t, pid)
	}
}

// TestScaleDownDuringSlowStart scales up models that take an hour to say
// HELLO, then scales down and removes them before any has: each change
// takes effect at once, and the processes that go are stopped.
func TestScaleDownDuringSlowStart(t *testing.T) {
	rt, _ := newRuntime(t, process.Options{})
	mv := version("1", 8, noop(t), "--hello-delay", "1h")
	ensure(t, rt, mv)
	all := pids(t, rt, mv)
	mv.Replicas = 1
	ensure(t, rt, mv)
	for _, pid := range all[1:] {
		testutil.Eventually(t, 10*time.Second, "a replica scaled away exited", func() bool { return gone(pid) })
	}
	if err := rt.Remove(t.Context(), mv.Model, mv.Version); err != nil {
		t.Fatal(err)
	}
	reaped(t, all[0])
}

// TestEnvironment: a model process gets the allow-listed variables of the
// proxy's environment, Options.PassEnv's, its version's env and the
// contract's, and nothing else of the proxy's: not the admin token.
func TestEnvironment(t *testing.T) {
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "secret-admin-token")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-key")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("TZ", "UTC")
	t.Setenv("HF_HOME", "/models/cache")
	rt, _ := newRuntime(t, process.Options{PassEnv: []string{"HF_HOME"}})
	out := filepath.Join(t.TempDir(), "env")
	mv := version("1", 1, "sh", "-c", `env > "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"; exec sleep 3600`)
	mv.Runtime.Env = map[string]string{"ENV_FILE": out}
	addr := ensure(t, rt, mv)[0]
	var env []string
	testutil.Eventually(t, 10*time.Second, "the model wrote its environment", func() bool {
		b, err := os.ReadFile(out)
		env = strings.Split(strings.TrimSpace(string(b)), "\n")
		return err == nil
	})
	has := func(kv string) bool { return slices.Contains(env, kv) }
	for _, want := range []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C.UTF-8", "TZ=UTC", "HF_HOME=/models/cache",
		"ENV_FILE=" + out, "SLOPROXY_RPC_ADDR=" + addr, "SLOPROXY_MODEL_NAME=echo", "SLOPROXY_MODEL_VERSION=1"} {
		if !has(want) {
			t.Errorf("the model's environment lacks %s: %v", want, env)
		}
	}
	for _, kv := range env {
		if strings.Contains(kv, "secret") {
			t.Errorf("the model's environment holds the proxy's secret %s", kv)
		}
	}
}
