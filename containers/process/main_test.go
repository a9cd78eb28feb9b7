package process_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/containers/process"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// basePort keeps this test binary's replicas apart from the default 7000 up
// that other packages' tests may use, and below Linux's ephemeral ports.
var basePort = 20000 + os.Getpid()%1000*10

// newRuntime returns a Runtime whose logs go to the test log and to the
// returned observer; it is closed when the test ends.
func newRuntime(t *testing.T, opts process.Options) (*process.Runtime, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	opts.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	if opts.BasePort == 0 {
		opts.BasePort = basePort
	}
	rt := process.New(opts)
	t.Cleanup(func() { _ = rt.Close() })
	return rt, logs
}

// noop returns the path of the noop model container.
func noop(t *testing.T) string {
	t.Helper()
	return testutil.BuildGo(t, "./examples/noop")
}

func version(v string, replicas int, command ...string) state.ModelVersion {
	return state.ModelVersion{
		Model: "echo", Version: v, InputType: state.InputBytes, Replicas: replicas,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: command},
	}
}

func ensure(t *testing.T, rt *process.Runtime, mv state.ModelVersion) []string {
	t.Helper()
	addrs, err := rt.Ensure(t.Context(), mv)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if len(addrs) != mv.Replicas {
		t.Fatalf("Ensure returned %d addresses %v; want %d", len(addrs), addrs, mv.Replicas)
	}
	return addrs
}

// hello connects to addr, waiting up to 10 s for the container to come up,
// checks that it echoes a prediction, and returns its HELLO.
func hello(t *testing.T, addr string) rpc.Hello {
	t.Helper()
	c := rpc.NewClient(addr, rpc.ClientOptions{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	c.Start(context.Background())
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	h, err := c.WaitReady(ctx)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	out, err := c.Predict(ctx, h.InputType, [][]byte{[]byte("ping")})
	if err != nil || len(out) != 1 || string(out[0].Data) != "ping" {
		t.Fatalf("%s: Predict(ping) = %+v, %v; want ping", addr, out, err)
	}
	return h
}

// pids returns the PIDs of a version's replicas, waiting until each has a
// process: Ensure returns before they start.
func pids(t *testing.T, rt *process.Runtime, mv state.ModelVersion) []int {
	t.Helper()
	var out []int
	testutil.Eventually(t, 10*time.Second, "every replica has a process", func() bool {
		out = out[:0]
		for _, s := range rt.Status(mv.Model, mv.Version) {
			if s.PID == 0 {
				return false
			}
			out = append(out, s.PID)
		}
		return true
	})
	return out
}

// gone reports whether process pid has ended. A zombie counts as ended: an
// orphaned grandchild is reaped by init, which may take its time.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// reaped checks that our child pid is gone and not a zombie.
// isReaped reports whether pid no longer exists: exited and reaped (a
// zombie still exists).
func isReaped(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

func reaped(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists (kill 0: %v): not stopped, or not reaped", pid, err)
	}
}

func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// logged returns the entries with message msg.
func logged(logs *observer.ObservedLogs, msg string) []observer.LoggedEntry {
	return logs.FilterMessage(msg).All()
}

func dirOf(path string) string { return filepath.Dir(path) }
