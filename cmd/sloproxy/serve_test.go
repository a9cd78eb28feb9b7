package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// digitZero is the first image of scikit-learn's digits data set, a 0.
const digitZero = `[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]`

// server is a running `serve`, in this process.
type server struct {
	query, admin string
	stop         func() error // cancels serve's context and returns its result
	logs         *testutil.Buffer
}

// startServe runs serve on the YAML configuration text until the test ends.
func startServe(t *testing.T, yaml string) *server {
	t.Helper()
	return startServeFile(t, yaml, "")
}

// startServeFile is startServe with the text also in the file at path,
// which serve then reloads; "" means no file.
func startServeFile(t *testing.T, yaml, path string) *server {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir() // not beside the repository, where serve resolves it
	}
	if path != "" {
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{logs: &testutil.Buffer{}}
	up := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- serve(ctx, cfg, path, testutil.RepoRoot(t), s.logs, func(q, a string) {
			s.query, s.admin = q, a
			close(up)
		})
	}()
	select {
	case <-up:
	case err := <-result:
		cancel()
		t.Fatalf("serve returned before listening: %v\n%s", err, s.logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("serve did not listen within 30 s\n%s", s.logs)
	}
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-result:
			case <-time.After(60 * time.Second):
				stopErr = fmt.Errorf("serve did not return within 60 s of its context ending")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("serve's log:\n%s", s.logs)
		}
	})
	return s
}

// answer is a query's response body.
type answer struct {
	QueryID     string          `json:"query_id"`
	Output      json.RawMessage `json:"output"`
	Default     bool            `json:"default"`
	Explanation string          `json:"default_explanation"`
	Error       string          `json:"error"`
}

// predict posts body to the app and decodes the answer.
func predict(t *testing.T, addr, app, body string) (int, answer) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/apps/"+app+"/predict", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /apps/%s/predict: %v", app, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("POST /apps/%s/predict: %d, body %q: %v", app, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, a
}

// waitServed polls the app until a model (not the default) answers.
func waitServed(t *testing.T, addr, app, body string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		status, a := predict(t, addr, app, body)
		if status == http.StatusOK && !a.Default {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("app %s not served by a model within %v: %d %+v", app, within, status, a)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidsOf returns the processes whose command line starts with path.
func pidsOf(path string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.HasPrefix(cmdline, []byte(path+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestServeEndToEnd runs the proxy as `serve` does, on a real redis-server,
// with real model processes (noop, costmodel and the sklearn example) that
// it starts itself, and checks the product's promises through HTTP only.
func TestServeEndToEnd(t *testing.T) {
	testutil.RequirePython(t, "sklearn", "joblib")
	redisAddr := testutil.StartRedis(t)
	noop := testutil.BuildGo(t, "./examples/noop")
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	const token = "e2e-token"
	a := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %s}
redis: {addr: %q, prefix: "e2e:"}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: echo, input_type: string, slo: 500ms, default_output: '"late"', models: [noop]}
  - {name: digits, input_type: float64, slo: 2s, default_output: "-1", models: [digits-logreg]}
  - {name: slow, input_type: float32, slo: 30ms, default_output: "0", models: [slow]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
  - name: digits-logreg
    version: "1"
    input_type: float64
    command: [/usr/bin/python3, examples/sklearn/serve.py, --model, examples/sklearn/digits_logreg.joblib, --input-type, float64]
  - {name: slow, version: "1", input_type: float32, command: [%q, -a, 300ms]}
`, token, redisAddr, testutil.FreePort(t), noop, costmodel))

	waitServed(t, a.query, "echo", `{"input": "x"}`, 30*time.Second)
	waitServed(t, a.query, "digits", `{"input": `+digitZero+`}`, 60*time.Second)

	t.Run("predictions", func(t *testing.T) {
		cases := []struct {
			app, body, want string
		}{
			{"echo", `{"input": "hello"}`, `"hello"`},
			{"echo", `{"input": "{\"a\": 1}"}`, `{"a": 1}`}, // JSON output is parsed
			{"digits", `{"input": ` + digitZero + `}`, `0`},
		}
		for _, c := range cases {
			status, ans := predict(t, a.query, c.app, c.body)
			if status != http.StatusOK || ans.Default || !jsonEqual(ans.Output, c.want) {
				t.Errorf("%s %s: %d %+v, want output %s", c.app, c.body, status, ans, c.want)
			}
		}
		resp, err := http.Post("http://"+a.query+"/apps/digits/predict", "application/json",
			strings.NewReader(`{"input_batch": [`+digitZero+`,`+digitZero+`]}`))
		if err != nil {
			t.Fatal(err)
		}
		var batch struct {
			Predictions []answer `json:"batch_predictions"`
		}
		err = json.NewDecoder(resp.Body).Decode(&batch)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(batch.Predictions) != 2 {
			t.Fatalf("input_batch: %d %+v %v", resp.StatusCode, batch, err)
		}
		for i, p := range batch.Predictions {
			if p.Default || !jsonEqual(p.Output, "0") || p.QueryID == "" {
				t.Errorf("input_batch[%d]: %+v, want output 0", i, p)
			}
		}
		if batch.Predictions[0].QueryID == batch.Predictions[1].QueryID {
			t.Errorf("input_batch: both answers have query id %s", batch.Predictions[0].QueryID)
		}
	})

	t.Run("SLO miss gives the flagged default", func(t *testing.T) {
		status, ans := predict(t, a.query, "slow", `{"input": [1, 2]}`)
		if status != http.StatusOK || !ans.Default || string(ans.Output) != "0" || ans.Explanation == "" {
			t.Fatalf("%d %+v, want the default output 0, flagged and explained", status, ans)
		}
		t.Logf("explanation: %q", ans.Explanation)
	})

	t.Run("admin requires the token", func(t *testing.T) {
		for _, auth := range []string{"", "Bearer wrong"} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+a.admin+"/api/v1/apps", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"error"`) {
				t.Errorf("Authorization %q: %d %s, want 401 with an error", auth, resp.StatusCode, body)
			}
		}
	})

	t.Run("cache purge through the admin API", func(t *testing.T) {
		for _, c := range []struct {
			body   string
			status int
		}{
			{`{"model": "noop"}`, http.StatusNoContent},
			{`{"app": "echo"}`, http.StatusNoContent},
			{`{"app": "nope"}`, http.StatusNotFound},
			{`{"app": "echo", "model": "noop"}`, http.StatusBadRequest},
		} {
			req, _ := http.NewRequest(http.MethodPost, "http://"+a.admin+"/api/v1/cache/purge", strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("purge %s: %d %s, want %d", c.body, resp.StatusCode, body, c.status)
			}
		}
	})

	t.Run("an app created through one proxy is served by another", func(t *testing.T) {
		b := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %s}
redis: {addr: %q, prefix: "e2e:"}
runtimes: {process: {enabled: false}}
`, token, redisAddr))
		var out, errOut bytes.Buffer
		t.Setenv(envAdminURL, "http://"+a.admin)
		t.Setenv(envAdminToken, token)
		if err := runApps([]string{"create", "--name", "late", "--input-type", "string", "--slo", "500ms"}, &out, &errOut); err != nil {
			t.Fatalf("sloproxy apps create: %v\n%s", err, errOut.String())
		}
		start := time.Now()
		if err := runApps([]string{"link", "late", "noop"}, &out, &errOut); err != nil {
			t.Fatalf("sloproxy apps link: %v\n%s", err, errOut.String())
		}
		waitServed(t, b.query, "late", `{"input": "7"}`, 10*time.Second)
		t.Logf("proxy B served the app %v after it was linked through proxy A's admin API", time.Since(start))
	})

	t.Run("a model process killed during a stream", func(t *testing.T) {
		pids := pidsOf(noop)
		if len(pids) != 1 {
			t.Fatalf("noop processes: %v, want one", pids)
		}
		var (
			mu                       sync.Mutex
			ok, defaults, failures   int
			firstFailure             string
			stop                     = make(chan struct{})
			wg                       sync.WaitGroup
			answeredAfterKillByModel bool
			killed                   = make(chan struct{})
		)
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					in := fmt.Sprintf("w%d-%d", w, i)
					status, ans := predict(t, a.query, "echo", `{"input": "`+in+`"}`)
					mu.Lock()
					switch {
					case status == http.StatusOK && !ans.Default && jsonEqual(ans.Output, `"`+in+`"`):
						ok++
						select {
						case <-killed:
							answeredAfterKillByModel = true
						default:
						}
					case status == http.StatusOK && ans.Default && string(ans.Output) == `"late"`:
						defaults++
					default:
						failures++
						if firstFailure == "" {
							firstFailure = fmt.Sprintf("%d %+v", status, ans)
						}
					}
					mu.Unlock()
				}
			})
		}
		answered := func() int { mu.Lock(); defer mu.Unlock(); return ok }
		testutil.Eventually(t, 30*time.Second, "10 answers before the kill", func() bool { return answered() >= 10 })
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		close(killed)
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			back := answeredAfterKillByModel
			mu.Unlock()
			if back && len(pidsOf(noop)) == 1 && pidsOf(noop)[0] != pids[0] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the noop process did not come back within 30 s of kill -9 (processes now %v)", pidsOf(noop))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// And a stream after the restart.
		after := answered()
		testutil.Eventually(t, 30*time.Second, "10 answers after the restart", func() bool { return answered() >= after+10 })
		close(stop)
		wg.Wait()
		t.Logf("stream: %d answered by the model, %d flagged defaults, %d failures", ok, defaults, failures)
		if failures > 0 {
			t.Fatalf("%d queries got neither the model's output nor the flagged default; first: %s", failures, firstFailure)
		}
	})

	t.Run("shutdown stops the model processes", func(t *testing.T) {
		if err := a.stop(); err != nil {
			t.Fatalf("serve returned %v, want nil", err)
		}
		if left := pidsOf(noop); len(left) > 0 {
			t.Fatalf("noop processes still running after serve returned: %v", left)
		}
		if left := pidsOf(costmodel); len(left) > 0 {
			t.Fatalf("costmodel processes still running after serve returned: %v", left)
		}
	})
}

// TestServeSIGTERM runs the built binary, sends it SIGTERM while queries
// are in flight, and checks that each of them is answered, that the model
// process stops, and that the proxy exits 0.
func TestServeSIGTERM(t *testing.T) {
	bin := testutil.BuildGo(t, "./cmd/sloproxy")
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	query := testutil.FreeAddr(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sloproxy.yaml")
	cfg := fmt.Sprintf(`
listen: %s
admin: {listen: 127.0.0.1:0, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: work, input_type: float32, slo: 5s, default_output: "-1", models: [work]}
models:
  - {name: work, version: "1", input_type: float32, command: [%q, -a, 400ms], batch_size: 1}
`, query, testutil.FreePort(t), costmodel)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sloproxy's log:\n%s", logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", query); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not listen within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitServed(t, query, "work", `{"input": [1]}`, 30*time.Second)

	// SIGHUP reloads the configuration and does not stop the proxy (it
	// would, by default, without draining).
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "SIGHUP reloads the configuration", func() bool {
		return strings.Contains(logs.String(), "config: reloaded")
	})
	waitServed(t, query, "work", `{"input": [1]}`, 30*time.Second)

	// One replica, batches of one, 400 ms each: the second and third
	// queries are still queued when SIGTERM arrives.
	const n = 3
	answers := make(chan string, n)
	for range n {
		go func() {
			status, ans := predict(t, query, "work", `{"input": [1, 2]}`)
			answers <- fmt.Sprintf("%d default=%v output=%s", status, ans.Default, ans.Output)
		}()
	}
	testutil.Eventually(t, 30*time.Second, "the queries in flight", func() bool { return inFlight(t, query) == n })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range n {
		select {
		case a := <-answers:
			if !strings.HasPrefix(a, "200 ") {
				t.Errorf("a query in flight at SIGTERM got %s, want 200 with the model's output or the default", a)
			}
			t.Logf("in flight at SIGTERM: %s", a)
		case <-time.After(30 * time.Second):
			t.Fatal("a query in flight at SIGTERM got no answer within 30 s")
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("sloproxy exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sloproxy did not exit within 30 s of SIGTERM")
	}
	if left := pidsOf(costmodel); len(left) > 0 {
		t.Fatalf("model processes still running after the proxy exited: %v", left)
	}
	if _, err := net.Dial("tcp", query); err == nil {
		t.Fatal("the query port still accepts connections after exit")
	}
}

func jsonEqual(raw json.RawMessage, want string) bool {
	var a, b any
	return json.Unmarshal(raw, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && fmt.Sprint(a) == fmt.Sprint(b)
}
