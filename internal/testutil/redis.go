// Package testutil holds helpers shared by tests: starting real redis-server
// and model processes.
package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisReadyTimeout bounds how long a redis-server may take to answer PING.
const redisReadyTimeout = 5 * time.Second

// RedisServer is a redis-server process on 127.0.0.1, without persistence,
// that a test can stop and start again on the same address.
type RedisServer struct {
	// Addr is host:port, the same after a restart.
	Addr string

	t     testing.TB
	bin   string
	dir   string
	conf  string   // a configuration file, the first argument; "" for none
	extra []string // arguments after the common ones
	port  int
	cmd   *exec.Cmd
	done  chan struct{} // closed when cmd has exited
}

// StartRedis starts a redis-server for the test and returns its address.
// The server is killed when the test ends.
func StartRedis(t testing.TB) (addr string) {
	t.Helper()
	return NewRedisServer(t).Addr
}

// NewRedisServer starts a redis-server on a free 127.0.0.1 port, waits until
// it answers PING, and kills it when the test ends. It fails the test if
// redis-server is not installed: run ./scripts/test, which installs it.
func NewRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	bin, err := findRedisBinary("redis-server")
	if err != nil {
		t.Fatalf("testutil: %v; run ./scripts/test, which installs it (apt-get install redis-server)", err)
	}
	return startRedisProcess(t, &RedisServer{t: t, bin: bin, dir: t.TempDir(), extra: args})
}

// startRedisProcess starts s on a free port and kills it when the test
// ends.
func startRedisProcess(t testing.TB, s *RedisServer) *RedisServer {
	t.Helper()
	t.Cleanup(s.Stop)
	// The free port may be taken between finding and using it; try again.
	for attempt := 1; ; attempt++ {
		var err error
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("testutil: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		err = s.start()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("testutil: %v", err)
		}
	}
}

// Start starts the server again on the same address after Stop, with an
// empty dataset, and waits until it answers PING.
func (s *RedisServer) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatalf("testutil: redis-server on %s is already running", s.Addr)
	}
	// The port was released when the server stopped; another process may
	// grab it in between, but that is very unlikely in a test.
	if err := s.start(); err != nil {
		s.t.Fatalf("testutil: restart: %v", err)
	}
}

// Stop kills the server and waits for it to exit. Clients see their
// connections closed and then refused, as after a crash. Stopping a
// stopped server does nothing.
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Pause stops the server with SIGSTOP: it keeps its port and its
// connections, and the kernel still accepts new ones, but nothing is
// answered until Resume, as when Redis stalls. The server is killed at the
// end of the test whether paused or not.
func (s *RedisServer) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
}

// Resume lets a paused server go on with SIGCONT: it answers what it
// received meanwhile, then new commands.
func (s *RedisServer) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT)
}

func (s *RedisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("testutil: redis-server on %s is not running", s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("testutil: redis-server on %s: %v: %v", s.Addr, sig, err)
	}
}

func (s *RedisServer) start() error {
	var args []string
	if s.conf != "" {
		args = append(args, s.conf)
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--loglevel", "warning",
	)
	cmd := exec.Command(s.bin, append(args, s.extra...)...)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = diesWithTest()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := waitForPing(s.Addr, done); err != nil {
		s.Stop()
		// out is safe to read: the process has exited and Wait returned.
		return fmt.Errorf("%s on %s: %w; its output:\n%s", s.bin, s.Addr, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// findRedisBinary looks for name (redis-server, redis-sentinel,
// redis-cli) on PATH, then where Debian puts it.
func findRedisBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/" + name, "/usr/bin/" + name} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in /usr/sbin or in /usr/bin", name)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	// A port below the kernel's ephemeral range (32768-60999 here): the
	// kernel never hands it to a client connection or a ":0" listener of
	// another test running at the same moment, and a dial to it while
	// nothing listens yet cannot connect to itself (a TCP self-connect
	// needs the source port to equal the destination).
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: 100 random ports from 20000 to 31999 were all taken")
}

// waitForPing waits until the server at addr answers PING, giving up when
// exited is closed or after redisReadyTimeout.
func waitForPing(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(redisReadyTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = ping(addr); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %v: %w", redisReadyTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		case <-tick.C:
		}
	}
}

// ping sends one PING in the Redis protocol and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
