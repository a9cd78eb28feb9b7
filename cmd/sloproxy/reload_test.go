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
)

// metric returns the value line of one series from addr's /metrics.
func metric(t *testing.T, addr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(raw)) {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimSpace(strings.TrimPrefix(line, series+" "))
		}
	}
	return ""
}

func TestReloadAppliesOnlyAValidFile(t *testing.T) {
	noop := testutil.BuildGo(t, "./examples/noop")
	path := filepath.Join(t.TempDir(), "sloproxy.yaml")
	port := testutil.FreePort(t)
	cfg := func(slo, shed, controller string) string {
		return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: echo, input_type: string, slo: %s, shed: %s, default_output: "none", models: [echo], batching: {controller: %s}}
models:
  - {name: echo, version: "1", input_type: string, command: [%q, --input-type, string]}
`, port, slo, shed, controller, noop)
	}
	good := cfg("2s", "default", "latency_model")
	s := startServeFile(t, good, path)
	waitServed(t, s.query, "echo", `{"input": "x"}`, 30*time.Second)
	const gauge = "sloproxy_config_last_reload_successful"
	if v := metric(t, s.query, gauge); v != "1" {
		t.Fatalf("%s = %q at start, want 1", gauge, v)
	}
	sloOf := func() string {
		out, _, err := runCLI("apps", "--admin", "http://"+s.admin, "--token", "t", "get", "echo", "--json")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(out), "")
	}
	if !strings.Contains(sloOf(), `"slo_ms":2000`) {
		t.Fatalf("the app's SLO at start: %s", sloOf())
	}

	// A file with a contradiction is refused as a whole: the gauge says
	// so and the running configuration stays.
	if err := os.WriteFile(path, []byte(cfg("500ms", "drop", "latency_model")), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the bad file to be refused", func() bool { return metric(t, s.query, gauge) == "0" })
	if !strings.Contains(s.logs.String(), `apps[0].shed \"drop\": must be default, reject or unavailable`) {
		t.Fatalf("the refusal does not name the field:\n%s", s.logs)
	}
	if !strings.Contains(sloOf(), `"slo_ms":2000`) {
		t.Fatalf("a refused file changed the app: %s", sloOf())
	}

	// A valid file applies, through the watcher and through SIGHUP alike;
	// the model's batching did not change, so what its governor learned
	// from the queries so far stays.
	const fitA = `sloproxy_latency_fit_seconds{model="echo",term="a",version="1"}`
	learned := metric(t, s.query, fitA)
	if learned == "" || learned == "0" {
		t.Fatalf("%s = %q after serving queries, want the learned fixed cost", fitA, learned)
	}
	if err := os.WriteFile(path, []byte(cfg("500ms", "reject", "latency_model")), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the good file to apply", func() bool { return metric(t, s.query, gauge) == "1" })
	if !strings.Contains(sloOf(), `"slo_ms":500`) {
		t.Fatalf("the reload did not change the app's SLO: %s", sloOf())
	}
	if kept := metric(t, s.query, fitA); kept != learned {
		t.Errorf("%s went from %s to %s over a reload that kept the batching: the learned state was dropped", fitA, learned, kept)
	}
	before := strings.Count(s.logs.String(), "config: reloaded")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "SIGHUP to reload", func() bool { return strings.Count(s.logs.String(), "config: reloaded") > before })
	waitServed(t, s.query, "echo", `{"input": "x"}`, 5*time.Second)

	// A change of the controller gives the model a new controller and a
	// new governor, which start from nothing.
	if err := os.WriteFile(path, []byte(cfg("500ms", "reject", "aimd")), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the new batching to apply", func() bool { return metric(t, s.query, fitA) == "0" })
	waitServed(t, s.query, "echo", `{"input": "x"}`, 5*time.Second)

	// A selection spec set through the admin API outlives a reload that
	// changes the app: the file does not hold it.
	if _, _, err := runCLI("apps", "--admin", "http://"+s.admin, "--token", "t", "select", "echo", `{"policy": "exp3", "gamma": 0.2}`); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg("400ms", "reject", "aimd")), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the SLO change to apply", func() bool { return strings.Contains(sloOf(), `"slo_ms":400`) })
	var app struct {
		Policy    string          `json:"policy"`
		Selection json.RawMessage `json:"selection"`
	}
	if err := json.Unmarshal([]byte(sloOf()), &app); err != nil {
		t.Fatal(err)
	}
	if string(app.Selection) != `{"policy":"exp3","gamma":0.2}` {
		t.Errorf("the reload dropped the admin API's selection spec: policy %q, selection %s", app.Policy, app.Selection)
	}
}
