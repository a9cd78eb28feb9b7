package testutil

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

// Python is Debian's interpreter, which has the packages ./scripts/test
// installs; the python3 first on PATH may be another one.
const Python = "/usr/bin/python3"

// RepoRoot is the repository's root folder (the one holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

var builds sync.Map // package path → *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BuildGo builds the main package pkg (e.g. "./examples/noop") once per test
// binary and returns the executable's path.
func BuildGo(t testing.TB, pkg string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "sloproxy-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// RequirePython fails the test, naming the fix, when Debian's Python lacks
// one of the modules.
func RequirePython(t testing.TB, modules ...string) {
	t.Helper()
	script := "import " + strings.Join(modules, ", ")
	if out, err := exec.Command(Python, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s cannot %q (%v): run ./scripts/test, which installs Debian's python3 packages\n%s", Python, script, err, out)
	}
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Process is a model container running as a child process.
type Process struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	log  *Buffer
}

// StartModel starts argv as a model container listening on a fresh loopback
// address (passed as SLOPROXY_RPC_ADDR, plus env), waits until it answers a
// HELLO, and stops it when the test ends.
func StartModel(t testing.TB, argv []string, env ...string) *Process {
	t.Helper()
	p := &Process{Addr: FreeAddr(t), done: make(chan struct{}), log: &Buffer{}}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(append(os.Environ(), "SLOPROXY_RPC_ADDR="+p.Addr), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = diesWithTest()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	if err := p.waitHello(60 * time.Second); err != nil {
		t.Fatalf("model %v did not come up: %v\noutput:\n%s", argv, err, p.log.String())
	}
	return p
}

// waitHello dials until the container sends its HELLO.
func (p *Process) waitHello(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.cmd.ProcessState)
		default:
		}
		nc, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			typ, _, rerr := rpc.NewFrameReader(bufio.NewReader(nc), 0).Next()
			nc.Close()
			if rerr == nil && typ == rpc.TypeHello {
				return nil
			}
			err = fmt.Errorf("no HELLO: type %d, %v", typ, rerr)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM, waits up to 5 s, then kills.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Client returns a started RPC client for the process, closed when the test
// ends.
func (p *Process) Client(t testing.TB) *rpc.Client {
	t.Helper()
	c := rpc.NewClient(p.Addr, rpc.ClientOptions{})
	c.Start(context.Background())
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// Eventually polls cond until it holds, failing the test, which names
// what it waited for, when within passes first.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
