package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Proxy is the real sloproxy binary serving a configuration file, as an
// operator runs it.
type Proxy struct {
	Query, Admin string // the listeners' addresses, from the configuration
	Config       string // the configuration file's path
	Dir          string // the working directory the binary runs in
	Logs         *Buffer
	cmd          *exec.Cmd
	exited       chan struct{}
	err          error // the exit status; read after exited is closed
}

// StartProxy writes yaml to a file in a fresh directory and runs
// `sloproxy serve --config FILE` there, with extra arguments appended, until
// the test ends. The YAML must set listen and admin.listen to fixed loopback
// addresses (FreeAddr), so that the test knows where to reach them, and log
// at info level (the default). It returns once the proxy has logged that it
// is serving and its query listener accepts connections; it fails the test
// if that takes more than a minute or the binary exits first.
func StartProxy(t testing.TB, yaml string, args ...string) *Proxy {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sloproxy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return StartProxyIn(t, dir, path, args...)
}

// StartProxyIn is StartProxy on an existing configuration file, run in dir:
// a test restarts a proxy on the same file and data by calling it again.
func StartProxyIn(t testing.TB, dir, path string, args ...string) *Proxy {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The listeners' addresses are read with yaml rather than config.Parse:
	// testutil serves the tests of packages that config imports.
	var cfg struct {
		Listen string `yaml:"listen"`
		Admin  struct {
			Listen string `yaml:"listen"`
		} `yaml:"admin"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, raw)
	}
	bin := BuildGo(t, "./cmd/sloproxy")
	p := &Proxy{Query: cfg.Listen, Admin: cfg.Admin.Listen, Config: path, Dir: dir, Logs: &Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"serve", "--config", path}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.Logs, p.Logs
	p.cmd.SysProcAttr = diesWithTest()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Errorf("sloproxy: %v", err)
		}
		if t.Failed() {
			t.Logf("sloproxy's log:\n%s", p.Logs)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		// The proxy's own "serving" line first (JSON or console format): a
		// connection alone could be another process's, had that one taken
		// the port since FreeAddr.
		if logs := p.Logs.String(); strings.Contains(logs, `"msg":"serving"`) || strings.Contains(logs, "\tinfo\tserving\t") {
			if c, err := net.DialTimeout("tcp", p.Query, time.Second); err == nil {
				c.Close()
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("sloproxy exited before listening: %v\n%s", p.err, p.Logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sloproxy did not listen on %s within a minute\n%s", p.Query, p.Logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Signal sends sig to the proxy's process.
func (p *Proxy) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Pid is the proxy's process id.
func (p *Proxy) Pid() int { return p.cmd.Process.Pid }

// Wait waits up to within for the proxy to exit and returns its exit status,
// or an error saying that it is still running.
func (p *Proxy) Wait(within time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	case <-time.After(within):
		return fmt.Errorf("sloproxy still running %v after it was asked to stop", within)
	}
}

// Stop sends SIGTERM and waits up to within for a clean exit; past that it
// kills the proxy and reports so. Stopping a proxy that already exited
// returns nil.
func (p *Proxy) Stop(within time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // it exited in the meantime
	}
	if err := p.Wait(within); err != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		return err
	}
	return nil
}
