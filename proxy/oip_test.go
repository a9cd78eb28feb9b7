package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// The request bodies below are written from the Open Inference Protocol's
// REST specification (KServe "V2", as Triton serves it): an inference
// request has "id", "parameters", "inputs" (name, shape, datatype, data
// flattened or nested row-major) and "outputs"; errors are {"error": ...}.
func TestOIP(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "echo32", InputType: state.InputFloat32, SLO: 2 * time.Second}, "vec", noopJSON(t, "float32"))
	e.addModel(state.App{Name: "echostr", InputType: state.InputString, SLO: 2 * time.Second}, "text", noop(t, "string"))

	t.Run("server", func(t *testing.T) {
		for _, path := range []string{"/v2/health/live", "/v2/health/ready"} {
			if status, _ := e.get(path); status != 200 {
				t.Errorf("%s: %d", path, status)
			}
		}
		status, m := e.get("/v2")
		if status != 200 || m["name"] != "sloproxy" || m["extensions"] == nil {
			t.Fatalf("/v2: %d %v", status, m)
		}
	})
	t.Run("model metadata", func(t *testing.T) {
		for _, path := range []string{"/v2/models/vec", "/v2/models/vec/versions/1"} {
			status, m := e.get(path)
			inputs, _ := m["inputs"].([]any)
			if status != 200 || m["name"] != "vec" || len(inputs) != 1 || inputs[0].(map[string]any)["datatype"] != "FP32" {
				t.Fatalf("%s: %d %v", path, status, m)
			}
		}
		if status, _ := e.get("/v2/models/vec/ready"); status != 200 {
			t.Fatalf("ready: %d", status)
		}
	})
	t.Run("infer FP32 batch", func(t *testing.T) {
		// The noop echoes its float32 bytes; noopJSON's model is the noop
		// behind a JSON-ing shim, so outputs are numeric vectors.
		body := `{"id": "42", "parameters": {"timeout": 2000000},
			"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}],
			"outputs": [{"name": "output"}]}`
		status, m := e.post("/v2/models/vec/infer", body)
		if status != 200 || m["id"] != "42" || m["model_name"] != "vec" || m["model_version"] != "1" {
			t.Fatalf("%d %v", status, m)
		}
		out := m["outputs"].([]any)[0].(map[string]any)
		if out["datatype"] != "FP64" || mustJSON(out["shape"]) != "[2,3]" || mustJSON(out["data"]) != "[1,2,3,4,5,6]" {
			t.Fatalf("output %v", out)
		}
	})
	t.Run("a timeout beyond time.Duration's range leaves the deadline alone", func(t *testing.T) {
		body := `{"parameters": {"timeout": 10000000000000000},
			"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [7]}]}`
		if status, m := e.post("/v2/models/vec/infer", body); status != 200 {
			t.Fatalf("%d %v", status, m)
		}
	})
	t.Run("infer nested data", func(t *testing.T) {
		body := `{"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2], [3, 4]]}]}`
		status, m := e.post("/v2/models/vec/versions/1/infer", body)
		out := m["outputs"].([]any)[0].(map[string]any)
		if status != 200 || mustJSON(out["data"]) != "[1.5,2,3,4]" {
			t.Fatalf("%d %v", status, m)
		}
	})
	t.Run("infer BYTES", func(t *testing.T) {
		body := `{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello", "world"]}]}`
		status, m := e.post("/v2/models/text/infer", body)
		out := m["outputs"].([]any)[0].(map[string]any)
		if status != 200 || out["datatype"] != "BYTES" || mustJSON(out["data"]) != `["hello","world"]` {
			t.Fatalf("%d %v", status, m)
		}
	})

	errs := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"unknown model", "GET", "/v2/models/nope", "", 404, `no model named "nope"`},
		{"unknown version", "GET", "/v2/models/vec/versions/9", "", 404, `has no version "9"`},
		{"unknown model ready", "GET", "/v2/models/nope/ready", "", 404, "no model"},
		{"infer unknown model", "POST", "/v2/models/nope/infer", `{}`, 404, "no model"},
		{"wrong datatype", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "INT32", "data": [1]}]}`, 400, `datatype "INT32"; the model takes FP32`},
		{"shape mismatch", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}`, 400, "needs 4 elements, data has 3"},
		{"two inputs", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]}]}`, 400, "has 2 inputs"},
		{"non-number", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, "x"]}]}`, 400, "is not a number"},
		{"unknown output", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "probs"}]}`, 400, `unknown output "probs"`},
		{"bad timeout", "POST", "/v2/models/vec/infer", `{"parameters": {"timeout": "soon"}, "inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`, 400, `"timeout"`},
		{"bad priority", "POST", "/v2/models/vec/infer", `{"parameters": {"priority": -2}, "inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`, 400, `"priority" must be a non-negative integer`},
		{"malformed JSON", "POST", "/v2/models/vec/infer", `{"inputs": [`, 400, "not an inference request"},
		{"batch over limit", "POST", "/v2/models/vec/infer", `{"inputs": [{"name": "input", "shape": [9, 1], "datatype": "FP32", "data": [1,2,3,4,5,6,7,8,9]}]}`, 400, "the limit is 8"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var status int
			var m map[string]any
			if tt.method == "GET" {
				status, m = e.get(tt.path)
			} else {
				status, m = e.post(tt.path, tt.body)
			}
			msg, _ := m["error"].(string)
			if status != tt.status || !strings.Contains(msg, tt.want) {
				t.Fatalf("got %d %q, want %d with %q", status, msg, tt.status, tt.want)
			}
		})
	}
}

func TestOIPTimeoutHonoured(t *testing.T) {
	e := newEnv(t, nil)
	slow := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--a", "300ms", "--b", "0"}).Addr
	e.addModel(state.App{Name: "slow", InputType: state.InputFloat32, SLO: 5 * time.Second}, "cost", slow)
	start := time.Now()
	status, m := e.post("/v2/models/cost/infer", `{"parameters": {"timeout": 20000}, "inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`)
	if status != 503 || !strings.Contains(m["error"].(string), "deadline") {
		t.Fatalf("%d %v", status, m)
	}
	// 20 ms asked, the model takes 300 ms: the answer comes at the deadline.
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Fatalf("answered after %v", took)
	}
	// With room for the model's 300 ms it answers.
	status, m = e.post("/v2/models/cost/infer", `{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`)
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
}

// noopJSON serves float32 items back as JSON arrays: the onnx-like shape of
// output, from a Python model written for the test.
func noopJSON(t *testing.T, inputType string) string {
	t.Helper()
	script := t.TempDir() + "/vec.py"
	src := `import sys
sys.path.insert(0, "` + testutil.RepoRoot(t) + `/containers/python")
import sloproxy_rpc
sloproxy_rpc.serve(lambda inputs: [list(x) for x in inputs], input_type="` + inputType + `", model_name="vec")
`
	must(t, os.WriteFile(script, []byte(src), 0o644))
	return testutil.StartModel(t, []string{testutil.Python, script}).Addr
}

func TestOIPPriority(t *testing.T) {
	for _, tc := range []struct {
		params string
		class  int
		err    bool
	}{
		{`{}`, 0, false},
		{`{"priority": 0}`, 0, false},
		{`{"priority": 1}`, 0, false},
		{`{"priority": 2}`, -1, false},
		{`{"priority": 5}`, -4, false},
		{`{"priority": -1}`, 0, true},
		{`{"priority": "high"}`, 0, true},
		{`{"priority": 1.5}`, 0, true},
		{`{"priority": 99999999999}`, 0, true},
	} {
		var req oipInferRequest
		if err := json.Unmarshal([]byte(`{"parameters": `+tc.params+`}`), &req); err != nil {
			t.Fatal(err)
		}
		level, err := oipLevel(&req)
		if class := oipClass(level); (err != nil) != tc.err || class != tc.class {
			t.Errorf("%s: class %d, error %v; want %d, error %v", tc.params, oipClass(level), err, tc.class, tc.err)
		}
	}
}

// TestOIPModelFailureIsNoDefault sends a model addressed through the OIP
// a row its replica dies on: the request is an error, and no line claims
// a default output, which only an app answers.
func TestOIPModelFailureIsNoDefault(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	e := newEnvOpts(t, Options{Store: state.NewStore(nil, state.Options{}), Registry: prometheus.NewRegistry(),
		MaxBodyBytes: 1 << 16, MaxInputBatch: 8, Logger: zap.New(core),
		// One attempt: the lost connection is the answer, not a retry
		// that waits for the deadline.
		Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond, MaxAttempts: 1}})
	e.addModel(state.App{Name: "dies", InputType: state.InputFloat32, SLO: 2 * time.Second}, "dies", diesModel(t))
	status, m := e.post("/v2/models/dies/infer", `{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`)
	if msg, _ := m["error"].(string); status != 503 || !strings.Contains(msg, "model dies:1 failed on row 0") {
		t.Fatalf("%d %v; want 503: the model failed on row 0", status, m)
	}
	if n := logs.FilterMessageSnippet("default output").Len(); n != 0 {
		t.Fatalf("%d log lines claim a default output: %+v", n, logs.All())
	}
}

// diesModel starts a float32 model whose process exits on its first
// query, and returns its address.
func diesModel(t *testing.T) string {
	script := t.TempDir() + "/dies.py"
	src := `import os, sys
sys.path.insert(0, "` + testutil.RepoRoot(t) + `/containers/python")
import sloproxy_rpc
sloproxy_rpc.serve(lambda inputs: os._exit(1), input_type="float32", model_name="dies")
`
	must(t, os.WriteFile(script, []byte(src), 0o644))
	return testutil.StartModel(t, []string{testutil.Python, script}).Addr
}

// TestLinkedApps checks what a model addressed through the OIP takes from
// its apps, and the autoscaler's capacity from: the tightest SLO, and no
// cache when one of them keeps its answers out.
func TestLinkedApps(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	must(t, store.PutVersion(ctx, state.ModelVersion{Model: "m", Version: "1", InputType: state.InputFloat32, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"127.0.0.1:1"}}}))
	for _, a := range []state.App{
		{Name: "loose", InputType: state.InputFloat32, SLO: 2 * time.Second},
		{Name: "tight", InputType: state.InputFloat32, SLO: 500 * time.Millisecond, NoCache: true},
	} {
		must(t, store.PutApp(ctx, a))
		must(t, store.Link(ctx, a.Name, "m"))
	}
	snap := store.Snapshot()
	if slo, noCache := linkedApps(snap, "m"); slo != 500*time.Millisecond || !noCache {
		t.Errorf("m: %v, no cache %v; want 500ms, true", slo, noCache)
	}
	if slo, noCache := linkedApps(snap, "unlinked"); slo != 0 || noCache {
		t.Errorf("unlinked: %v, no cache %v; want 0, false", slo, noCache)
	}
}

// TestTimeoutParam checks the "timeout" parameter both transports read:
// microseconds, zero or a non-integer refused, one beyond time.Duration's
// range no deadline at all; REST names the value it got.
func TestTimeoutParam(t *testing.T) {
	for _, tc := range []struct {
		us    uint64
		valid bool
		want  time.Duration
		err   bool
	}{
		{1500, true, 1500 * time.Microsecond, false},
		{0, true, 0, true},
		{7, false, 0, true},
		{math.MaxInt64 / 1000, true, 0, false},
		{math.MaxUint64, true, 0, false},
	} {
		d, err := TimeoutParam(tc.us, tc.valid)
		if d != tc.want || (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrBadInput)) {
			t.Errorf("TimeoutParam(%d, %v) = %v, %v; want %v, error %v", tc.us, tc.valid, d, err, tc.want, tc.err)
		}
	}
	var req oipInferRequest
	must(t, json.Unmarshal([]byte(`{"parameters": {"timeout": "soon"}}`), &req))
	if _, err := oipTimeout(&req); err == nil || !errors.Is(err, ErrBadInput) ||
		err.Error() != `bad input: parameter "timeout" must be a positive integer number of microseconds, got "soon"` {
		t.Errorf("oipTimeout: %v", err)
	}
	// REST reads the whole uint64 range gRPC's uint64_param carries.
	for _, tc := range []struct {
		raw string
		err bool
	}{
		{"9223372036854775808", false},  // 2^63
		{"18446744073709551615", false}, // 2^64-1
		{"18446744073709551616", true},
	} {
		var req oipInferRequest
		must(t, json.Unmarshal([]byte(`{"parameters": {"timeout": `+tc.raw+`}}`), &req))
		if d, err := oipTimeout(&req); d != 0 || (err != nil) != tc.err {
			t.Errorf("oipTimeout(%s) = %v, %v; want 0, error %v", tc.raw, d, err, tc.err)
		}
	}
}

// TestPriorityParam checks the "priority" parameter both transports read:
// a level up to math.MaxInt32, anything else bad input; REST names the
// value it got.
func TestPriorityParam(t *testing.T) {
	for _, tc := range []struct {
		level uint64
		valid bool
		err   bool
	}{
		{0, true, false},
		{3, true, false},
		{math.MaxInt32, true, false},
		{math.MaxInt32 + 1, true, true},
		{math.MaxUint64, true, true},
		{1, false, true},
	} {
		l, err := PriorityParam(tc.level, tc.valid)
		if (err != nil) != tc.err || (err != nil && !errors.Is(err, ErrBadInput)) || (err == nil && uint64(l) != tc.level) {
			t.Errorf("PriorityParam(%d, %v) = %d, %v; want error %v", tc.level, tc.valid, l, err, tc.err)
		}
	}
	var req oipInferRequest
	must(t, json.Unmarshal([]byte(`{"parameters": {"priority": "high"}}`), &req))
	if _, err := oipLevel(&req); err == nil ||
		err.Error() != `bad input: parameter "priority" must be a non-negative integer (1 is the highest level), got "high"` {
		t.Errorf("oipLevel: %v", err)
	}
}

// TestOIPDecodeFailureIsLogged: an OIP request over REST that does not
// decode is counted and logged at debug, as gRPC's are.
func TestOIPDecodeFailureIsLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	e := newEnvOpts(t, Options{Store: state.NewStore(nil, state.Options{}), Registry: prometheus.NewRegistry(),
		MaxBodyBytes: 1 << 16, MaxInputBatch: 8, Logger: zap.New(core)})
	if status, _ := e.post("/v2/models/m/infer", `{"inputs": 7}`); status != 400 {
		t.Fatalf("%d; want 400", status)
	}
	lines := logs.FilterMessage("request rejected").FilterField(zap.String("api", "oip"))
	if lines.Len() != 1 {
		t.Fatalf("%d lines of the rejected request; want 1: %+v", lines.Len(), logs.All())
	}
	if n := promtest.ToFloat64(e.proxy.metrics.requests.WithLabelValues("oip", "", "", outcomeError)); n != 1 {
		t.Errorf("sloproxy_requests_total{api=\"oip\",outcome=\"error\"} %v, want 1", n)
	}
}
