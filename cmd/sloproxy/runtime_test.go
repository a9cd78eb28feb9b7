package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// These tests run the real sloproxy binary (testutil.StartProxy) with the
// process runtime and the noop model, as an operator runs them.

const binaryAdminToken = "runtime-test-token"

// drainTime bounds a stop after SIGTERM: the listeners' shutdown grace,
// then the model processes' grace period (5 s), and a margin.
const drainTime = shutdownGrace + 10*time.Second

// startSlowProxy runs the binary serving one model, noop version 1 with one
// replica, whose processes take an hour to send their HELLO, as a model
// loading large weights does.
func startSlowProxy(t *testing.T) *testutil.Proxy {
	t.Helper()
	noop := testutil.BuildGo(t, "./examples/noop")
	return testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin:
  listen: %s
  token: %s
runtimes:
  process:
    port_base: %d
models:
  - name: noop
    version: "1"
    input_type: bytes
    command: [%s, --hello-delay, 1h]
`, testutil.FreeAddr(t), testutil.FreeAddr(t), binaryAdminToken, testutil.FreePort(t), noop))
}

// putReplicas asks p's admin API for n replicas of noop version 1 and
// returns the status and the body's error message, if any.
func putReplicas(t *testing.T, p *testutil.Proxy, n int) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+p.Admin+"/api/v1/models/noop/versions/1/replicas",
		strings.NewReader(fmt.Sprintf(`{"replicas": %d}`, n)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+binaryAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	var eb admin.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
		t.Fatalf("answer %d is not {\"error\": message}: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, eb.Error
}

// TestBinaryRefusesReplicasAboveTheLimit: a replica count above
// limits.max_replicas is a 400 naming the limit, and starts nothing.
func TestBinaryRefusesReplicasAboveTheLimit(t *testing.T) {
	p := startSlowProxy(t)
	status, msg := putReplicas(t, p, 1_000_000_000)
	if status != http.StatusBadRequest || !strings.Contains(msg, "above limits.max_replicas (32)") {
		t.Fatalf("PUT replicas 1000000000: %d %q; want 400 naming limits.max_replicas (32)", status, msg)
	}
	testutil.Eventually(t, time.Minute, "the configured replica's process, alone", func() bool { return len(testutil.Children(p.Pid())) == 1 })
}

// TestBinarySIGTERMDuringScaleUp scales up to the limit with models that
// are still loading and sends SIGTERM: the proxy exits cleanly within its
// drain time, and no model process is left.
func TestBinarySIGTERMDuringScaleUp(t *testing.T) {
	p := startSlowProxy(t)
	if status, msg := putReplicas(t, p, 32); status != http.StatusOK {
		t.Fatalf("PUT replicas 32: %d %s", status, msg)
	}
	if status, _ := putReplicas(t, p, 1_000_000_000); status != http.StatusBadRequest {
		t.Fatalf("PUT replicas 1000000000: %d; want 400", status)
	}
	testutil.Eventually(t, time.Minute, "32 model processes", func() bool { return len(testutil.Children(p.Pid())) == 32 })
	groups := testutil.Children(p.Pid())
	if err := p.Stop(drainTime); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	for _, g := range groups {
		if left := testutil.GroupMembers(g); len(left) > 0 {
			t.Errorf("model process group %d outlived the proxy: %v", g, left)
		}
	}
}

// TestBinarySIGKILLLeavesNoModelProcess kills the proxy with SIGKILL while
// it runs a model directly and one under a wrapper (as `go run` runs its
// binary, a grandchild of the proxy): every process of every replica's
// group dies with it. The wrapper also shows what a model's environment
// holds: not the admin token the proxy was given.
func TestBinarySIGKILLLeavesNoModelProcess(t *testing.T) {
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "secret-admin-token")
	noop := testutil.BuildGo(t, "./examples/noop")
	envFile := filepath.Join(t.TempDir(), "env")
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin:
  listen: %s
runtimes:
  process:
    port_base: %d
models:
  - name: direct
    version: "1"
    input_type: bytes
    command: [%s]
  - name: wrapped
    version: "1"
    input_type: bytes
    command: [sh, -c, 'env > "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"; "$NOOP" & wait']
    env: {NOOP: %s, ENV_FILE: %s}
    replicas: 2
`, testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreePort(t), noop, noop, envFile))
	// Both models ready: every replica's model (the wrapped ones a
	// grandchild of the proxy) answered its HELLO.
	for _, m := range []string{"direct", "wrapped"} {
		testutil.Eventually(t, time.Minute, m+" ready", func() bool {
			resp, err := http.Get("http://" + p.Query + "/v2/models/" + m + "/ready")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	var groups []int
	testutil.Eventually(t, time.Minute, "three replicas' process groups and the environment file", func() bool {
		groups = testutil.Children(p.Pid())
		_, err := os.Stat(envFile)
		return len(groups) == 3 && err == nil
	})
	env, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(env), "SLOPROXY_ADMIN_TOKEN") || strings.Contains(string(env), "secret-admin-token") {
		t.Errorf("a model process got the admin token:\n%s", env)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Minute); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("sloproxy after SIGKILL: %v", err)
	}
	testutil.Eventually(t, time.Minute, "every model process gone with the proxy", func() bool {
		for _, g := range groups {
			if len(testutil.GroupMembers(g)) > 0 {
				return false
			}
		}
		return true
	})
}
