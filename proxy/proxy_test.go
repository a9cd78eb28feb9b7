package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is a proxy over a store, served by httptest, with model processes.
type env struct {
	t     *testing.T
	store *state.Store
	proxy *Proxy
	reg   *prometheus.Registry
	srv   *httptest.Server
}

func newEnv(t *testing.T, store *state.Store) *env {
	t.Helper()
	return newEnvWith(t, store, nil, prometheus.NewRegistry())
}

// newEnvWith is newEnv with a prediction cache (nil for none) whose
// metrics are in reg.
func newEnvWith(t *testing.T, store *state.Store, c *cache.Cache, reg *prometheus.Registry) *env {
	t.Helper()
	if store == nil {
		store = state.NewStore(nil, state.Options{})
	}
	return newEnvOpts(t, Options{Store: store, Registry: reg, MaxBodyBytes: 1 << 16, MaxInputBatch: 8, Cache: c,
		Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond}})
}

// newEnvOpts runs a proxy with opts (Store and Registry set) until the
// test ends.
func newEnvOpts(t *testing.T, opts Options) *env {
	t.Helper()
	p := New(opts)
	store, reg := opts.Store, opts.Registry
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	return &env{t: t, store: store, proxy: p, reg: reg, srv: srv}
}

// addModel registers an external model version at addr, links it to a new
// app and waits until the proxy has a healthy replica of it.
func (e *env) addModel(app state.App, model, addr string) {
	e.t.Helper()
	ctx := context.Background()
	mv := state.ModelVersion{Model: model, Version: "1", InputType: app.InputType, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}
	must(e.t, e.store.PutVersion(ctx, mv))
	must(e.t, e.store.SetReplicas(ctx, model, "1", []string{addr}))
	must(e.t, e.store.PutApp(ctx, app))
	must(e.t, e.store.Link(ctx, app.Name, model))
	e.waitHealthy(model, "1")
}

func (e *env) waitHealthy(model, version string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d := e.proxy.pool.get(model, version); d != nil {
			if _, h := d.Replicas(); h > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("model %s:%s has no healthy replica", model, version)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// post sends body and decodes the JSON answer.
func (e *env) post(path, body string) (int, map[string]any) {
	e.t.Helper()
	resp, err := http.Post(e.srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		e.t.Fatalf("%s answered %d with non-JSON %q", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

func (e *env) get(path string) (int, map[string]any) {
	e.t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		e.t.Fatalf("%s answered %d with non-JSON %q", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

func noop(t *testing.T, inputType string) string {
	return testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/noop"), "--input-type", inputType}).Addr
}

func TestPredictThroughNoop(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "echo", InputType: state.InputString, SLO: 2 * time.Second, DefaultOutput: "none"}, "noop", noop(t, "string"))
	tests := []struct {
		name, path, body string
		want             any
	}{
		{"JSON output is parsed", "/apps/echo/predict", `{"input": "[1,2.5,\"x\"]"}`, []any{1.0, 2.5, "x"}},
		{"other output is a string", "/apps/echo/predict", `{"input": "héllo"}`, "héllo"},
		{"Clipper's path", "/echo/predict", `{"input": "42"}`, 42.0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := e.post(tt.path, tt.body)
			if status != 200 || m["default"] != false || m["model"] != "noop:1" {
				t.Fatalf("%d %v", status, m)
			}
			if got, _ := json.Marshal(m["output"]); string(got) != mustJSON(tt.want) {
				t.Fatalf("output %s, want %s", got, mustJSON(tt.want))
			}
			if id, _ := m["query_id"].(string); id == "" {
				t.Fatalf("no query_id in %v", m)
			}
		})
	}
	status, m := e.post("/apps/echo/predict", `{"input_batch": ["a", "1", "b"]}`)
	preds, _ := m["batch_predictions"].([]any)
	if status != 200 || len(preds) != 3 {
		t.Fatalf("batch: %d %v", status, m)
	}
	ids := map[any]bool{}
	for i, want := range []any{"a", 1.0, "b"} {
		p := preds[i].(map[string]any)
		if p["output"] != want || p["default"] != false {
			t.Fatalf("batch item %d: %v", i, p)
		}
		ids[p["query_id"]] = true
	}
	if len(ids) != 3 {
		t.Fatalf("query ids are not unique: %v", preds)
	}
	if n := promtest.ToFloat64(e.proxy.metrics.requests.WithLabelValues("rest", "echo", "noop:1", "ok")); n != 6 {
		t.Fatalf("ok requests counted %v, want 6", n)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "f32", InputType: state.InputFloat32, SLO: time.Second}, "noop32", noop(t, "float32"))
	must(t, e.store.PutApp(context.Background(), state.App{Name: "i32", InputType: state.InputInt32, SLO: time.Second}))
	must(t, e.store.PutApp(context.Background(), state.App{Name: "raw", InputType: state.InputBytes, SLO: time.Second}))
	big := `{"input": [` + strings.Repeat("1,", 40000) + `1]}`
	tests := []struct {
		name, path, body string
		status           int
		want             string // in the error message
	}{
		{"malformed JSON", "/apps/f32/predict", `{"input": [1,`, 400, "body is not the JSON object"},
		{"not an object", "/apps/f32/predict", `[1,2]`, 400, "body is not the JSON object"},
		{"no input", "/apps/f32/predict", `{"inputs": [1]}`, 400, `neither "input" nor "input_batch"`},
		{"both fields", "/apps/f32/predict", `{"input": [1], "input_batch": [[1]]}`, 400, "both"},
		{"string for numbers", "/apps/f32/predict", `{"input": "1,2"}`, 400, "must be a JSON array of numbers for a float32 app"},
		{"non-numeric element", "/apps/f32/predict", `{"input": [1, "two", 3]}`, 400, `input[1]: "two" is not a number`},
		{"null element", "/apps/f32/predict", `{"input": [1, null]}`, 400, "input[1]: null is not a number"},
		{"float32 overflow", "/apps/f32/predict", `{"input": [1e39]}`, 400, "out of float32 range"},
		{"int32 fraction", "/apps/i32/predict", `{"input": [1.5]}`, 400, "input[0]: 1.5 is not an int32"},
		{"int32 overflow", "/apps/i32/predict", `{"input": [2147483648]}`, 400, "is not an int32"},
		{"bytes not base64", "/apps/raw/predict", `{"input": "%%%"}`, 400, "must be base64"},
		{"batch element wrong", "/apps/f32/predict", `{"input_batch": [[1], "x"]}`, 400, "input_batch[1]"},
		{"empty batch", "/apps/f32/predict", `{"input_batch": []}`, 400, "empty"},
		{"batch over limit", "/apps/f32/predict", `{"input_batch": [[1],[1],[1],[1],[1],[1],[1],[1],[1]]}`, 400, "exceeds the limit of 8 inputs"},
		{"batch over limit, not encoded past it", "/apps/f32/predict", `{"input_batch": [[1],[1],[1],[1],[1],[1],[1],[1],"x"]}`, 400, "exceeds the limit of 8 inputs"},
		{"body over limit", "/apps/f32/predict", big, 413, "exceeds the limit of 65536 bytes"},
		{"unknown app", "/apps/nope/predict", `{"input": [1]}`, 404, `no app named "nope"`},
		{"unknown path", "/apps/f32/predictions", `{}`, 404, "no endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := e.post(tt.path, tt.body)
			msg, _ := m["error"].(string)
			if status != tt.status || !strings.Contains(msg, tt.want) {
				t.Fatalf("got %d %q, want %d with %q", status, msg, tt.status, tt.want)
			}
		})
	}
	// None of that disturbed the app: it still answers.
	if status, m := e.post("/apps/f32/predict", `{"input": [1.5]}`); status != 200 || m["default"] != false {
		t.Fatalf("after the battery: %d %v", status, m)
	}
}

// startHeldModel serves a float32 model over a real TCP socket that
// computes nothing until the test ends, whatever its requests' deadlines:
// an answer that reaches the client before then did not wait for it.
func startHeldModel(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	hold := make(chan struct{})
	srv := rpc.NewServer(rpc.ModelFunc(func(_ context.Context, inputs [][]byte) ([]rpc.Output, error) {
		<-hold
		return make([]rpc.Output, len(inputs)), nil
	}), rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.Float32, Model: "held", ModelVersion: "1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(func() { close(hold) }) // runs first: the model's calls end, then the server
	return ln.Addr().String()
}

func TestSLOMissGivesFlaggedDefault(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "slow", InputType: state.InputFloat32, SLO: 30 * time.Millisecond, DefaultOutput: `{"label": -1}`}, "cost", startHeldModel(t))
	// The model answers only when the test ends: the default comes at the
	// deadline, not when the model finishes.
	status, m := e.post("/apps/slow/predict", `{"input": [1]}`)
	if status != 200 || m["default"] != true || mustJSON(m["output"]) != `{"label":-1}` {
		t.Fatalf("%d %v", status, m)
	}
	if why, _ := m["default_explanation"].(string); !strings.Contains(why, "deadline") || !strings.Contains(why, "30ms") {
		t.Fatalf("explanation %q", why)
	}
	if n := promtest.ToFloat64(e.proxy.metrics.requests.WithLabelValues("rest", "slow", "cost:1", "default")); n != 1 {
		t.Fatalf("default outcomes counted %v", n)
	}
}

func TestAppWithoutModelGivesDefault(t *testing.T) {
	e := newEnv(t, nil)
	must(t, e.store.PutApp(context.Background(), state.App{Name: "lonely", InputType: state.InputString, SLO: time.Second, DefaultOutput: "0"}))
	status, m := e.post("/apps/lonely/predict", `{"input": "x"}`)
	if status != 200 || m["default"] != true || m["output"] != 0.0 || !strings.Contains(m["default_explanation"].(string), "no model is linked") {
		t.Fatalf("%d %v", status, m)
	}
}

func TestSklearnThroughTheProxy(t *testing.T) {
	testutil.RequirePython(t, "sklearn", "joblib")
	dir := t.TempDir()
	// The selection tests' script: scikit-learn models only, no PyTorch.
	script := testutil.RepoRoot(t) + "/proxy/testdata/train_digits_models.py"
	if out, err := exec.Command(testutil.Python, script, dir).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var held struct {
		X       [][]float64      `json:"x"`
		Sklearn map[string][]int `json:"pred"`
	}
	raw, err := os.ReadFile(dir + "/heldout.json")
	must(t, err)
	must(t, json.Unmarshal(raw, &held))
	addr := testutil.StartModel(t, []string{testutil.Python, testutil.RepoRoot(t) + "/examples/sklearn/serve.py", "--model", dir + "/logreg.joblib"}).Addr
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "digits", InputType: state.InputFloat64, SLO: 5 * time.Second, DefaultOutput: "-1"}, "logreg", addr)
	// An input of the wrong length: the model refuses it, and the caller
	// gets 422 with the model's reason; the app goes on serving.
	status, m := e.post("/apps/digits/predict", `{"input": [1, 2, 3]}`)
	if msg, _ := m["error"].(string); status != http.StatusUnprocessableEntity || !strings.Contains(msg, "model logreg version 1 failed") || !strings.Contains(msg, "features") {
		t.Fatalf("3 features for a 64-feature model: %d %v, want 422 naming the model and the problem", status, m)
	}
	// The same refusal through the OIP: 400, as Triton answers an invalid
	// argument, naming the row.
	status, m = e.post("/v2/models/logreg/infer", `{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}`)
	if msg, _ := m["error"].(string); status != http.StatusBadRequest || !strings.Contains(msg, "row 0: model logreg version 1 failed") {
		t.Fatalf("OIP, 3 features for a 64-feature model: %d %v, want 400 naming the row and the model", status, m)
	}
	for start := 0; start < len(held.X); start += 8 {
		end := min(start+8, len(held.X))
		body, _ := json.Marshal(map[string]any{"input_batch": held.X[start:end]})
		status, m := e.post("/apps/digits/predict", string(body))
		preds, _ := m["batch_predictions"].([]any)
		if status != 200 || len(preds) != end-start {
			t.Fatalf("rows %d..%d: %d %v", start, end, status, m)
		}
		for i, p := range preds {
			got := p.(map[string]any)
			if got["default"] != false || got["output"] != float64(held.Sklearn["logreg"][start+i]) {
				t.Fatalf("row %d: %v, want %d", start+i, got, held.Sklearn["logreg"][start+i])
			}
		}
	}
}

func TestTwoProxiesOnOneRedis(t *testing.T) {
	addr := testutil.StartRedis(t)
	storeA, storeB := redisStore(t, addr), redisStore(t, addr)
	a, b := newEnv(t, storeA), newEnv(t, storeB)
	model := noop(t, "string")
	a.addModel(state.App{Name: "shared", InputType: state.InputString, SLO: 2 * time.Second}, "noop", model)
	// Created through A; B serves it once the change arrives.
	testutil.Eventually(t, 10*time.Second, "proxy B serves the app proxy A created", func() bool {
		status, m := b.post("/apps/shared/predict", `{"input": "7"}`)
		return status == 200 && m["default"] == false && m["output"] == 7.0
	})
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "m", InputType: state.InputString, SLO: time.Second}, "noop", noop(t, "string"))
	e.post("/apps/m/predict", `{"input": "1"}`)
	e.post("/apps/no-such-app-1/predict", `{"input": "1"}`)
	resp, err := http.Get(e.srv.URL + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if bytes.Contains(body, []byte("no-such-app-1")) {
		t.Error("/metrics has a series labelled with an app name no app has: clients could create series at will")
	}
	for _, want := range []string{
		`sloproxy_requests_total{api="rest",app="m",model="noop:1",outcome="ok"} 1`,
		`sloproxy_request_duration_seconds_count{api="rest",app="m"} 1`,
		`sloproxy_queue_wait_seconds_count{model="noop",version="1"} 1`,
		`sloproxy_replica_healthy{model="noop",replica=`,
		"sloproxy_requests_in_flight 0",
		"sloproxy_recent_queries 1\n",
		"sloproxy_recent_queries_capacity 65536\n",
		"sloproxy_recent_queries_bytes ",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// redisStore is a started Store on the Redis at addr.
func redisStore(t *testing.T, addr string) *state.Store {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr})
	s := state.NewStore(state.NewRedis(client, state.RedisOptions{}), state.Options{})
	must(t, s.Start(context.Background()))
	t.Cleanup(func() { s.Close(); client.Close() })
	return s
}

func TestPredictApp(t *testing.T) {
	tests := []struct {
		path, app string
		ok        bool
	}{
		{"/apps/digits/predict", "digits", true},
		{"/digits/predict", "digits", true},
		{"/apps/predict", "apps", true}, // Clipper's form with an app named "apps"
		{"/apps//predict", "", false},
		{"//predict", "", false},
		{"/predict", "", false},
		{"/apps/a/b/predict", "", false},
		{"/a/b/predict", "", false},
		{"/apps/digits/predict/", "", false},
		{"/apps/digits/predictions", "", false},
	}
	for _, tt := range tests {
		app, ok := predictApp(tt.path)
		if app != tt.app || ok != tt.ok {
			t.Errorf("predictApp(%q) = %q, %v; want %q, %v", tt.path, app, ok, tt.app, tt.ok)
		}
	}
}
