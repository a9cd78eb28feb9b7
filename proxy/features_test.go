package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// startVectorModel serves a float64 model over a real TCP socket that
// answers each input with its values as a JSON array: what the model saw.
func startVectorModel(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	srv := rpc.NewServer(rpc.ModelFunc(func(_ context.Context, inputs [][]byte) ([]rpc.Output, error) {
		outs := make([]rpc.Output, len(inputs))
		for i, in := range inputs {
			vals := make([]float64, len(in)/8)
			for j := range vals {
				vals[j] = math.Float64frombits(binary.LittleEndian.Uint64(in[8*j:]))
			}
			outs[i].Data, _ = json.Marshal(vals)
		}
		return outs, nil
	}), rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.Float64, Model: "vec", ModelVersion: "1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func float(v float64) *float64 { return &v }

// TestFeatures runs apps whose features live in a real redis-server, apart
// from the prediction cache's, in front of a real model over TCP.
func TestFeatures(t *testing.T) {
	store := testutil.NewRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: store.Addr})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	lookups := features.NewTable(features.Options{Registerer: reg})
	t.Cleanup(func() { lookups.Close() })
	fields := []features.Field{{Name: "clicks", Type: features.TypeInt, Default: float(-1)}, {Name: "spend", Default: float(-2)}}
	spec := func(missing features.Missing) features.Spec {
		return features.Spec{Key: "user:{user_id}", Fields: fields, Missing: missing, Timeout: 30 * time.Millisecond, Redis: store.Addr}
	}
	named := spec(features.UseDefaults)
	named.Input = "user"
	must(t, lookups.Set(map[string]features.Spec{
		"defaults": spec(features.UseDefaults), "notfound": spec(features.NotFound), "fallback": spec(features.DefaultOutput), "layout": named, "only": named}))
	e := newEnvOpts(t, Options{Store: state.NewStore(nil, state.Options{}), Registry: reg, MaxInputBatch: 8,
		Cache: newCacheOn(t, testutil.StartRedis(t), reg), Features: lookups, Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond}})
	addr := startVectorModel(t)
	e.addModel(state.App{Name: "defaults", InputType: state.InputFloat64, SLO: 2 * time.Second, DefaultOutput: "-1"}, "vec", addr)
	layout := []state.InputPart{{Name: "dense", Size: 2}, {Name: "user", Size: 2}, {Name: "tail", Size: 1}}
	for _, app := range []state.App{{Name: "notfound"}, {Name: "fallback"}, {Name: "layout", Inputs: layout}, {Name: "only", Inputs: layout[1:2]}} {
		app.InputType, app.SLO, app.DefaultOutput = state.InputFloat64, 2*time.Second, "-1"
		must(t, e.store.PutApp(context.Background(), app))
		must(t, e.store.Link(context.Background(), app.Name, "vec"))
	}
	ctx := context.Background()
	must(t, rdb.HSet(ctx, "user:1", "clicks", "3", "spend", "0.5").Err())
	predict := func(app, body string) (int, map[string]any) {
		t.Helper()
		return e.post("/apps/"+app+"/predict", body)
	}

	t.Run("a changed feature changes the next answer", func(t *testing.T) {
		for _, want := range []string{"[7,3,0.5]", "[7,3,0.5]"} {
			if status, m := predict("defaults", `{"input": [7], "entity": {"user_id": "1"}}`); status != 200 || mustJSON(m["output"]) != want {
				t.Fatalf("%d %v; want %s", status, m, want)
			}
		}
		must(t, rdb.HSet(ctx, "user:1", "clicks", "4").Err())
		if status, m := predict("defaults", `{"input": [7], "entity": {"user_id": "1"}}`); status != 200 || mustJSON(m["output"]) != "[7,4,0.5]" {
			t.Fatalf("after HSET: %d %v; want [7,4,0.5], not the cached answer", status, m)
		}
	})
	t.Run("a batch, one lookup", func(t *testing.T) {
		before := lookupCount(t, reg, "defaults")
		status, m := predict("defaults", `{"input_batch": [[1], [2]], "entity_batch": [{"user_id": "1"}, {"user_id": "2"}]}`)
		preds, _ := m["batch_predictions"].([]any)
		if status != 200 || len(preds) != 2 || mustJSON(preds[0].(map[string]any)["output"]) != "[1,4,0.5]" ||
			mustJSON(preds[1].(map[string]any)["output"]) != "[2,-1,-2]" {
			t.Fatalf("%d %v", status, m)
		}
		if n := lookupCount(t, reg, "defaults") - before; n != 1 {
			t.Fatalf("%d lookups for one request; want 1 (one pipelined round trip)", n)
		}
	})
	t.Run("missing entity", func(t *testing.T) {
		for _, tc := range []struct {
			app    string
			status int
			want   answerWant
		}{
			{"defaults", 200, answerWant{"[7,-1,-2]", false, ""}},
			{"notfound", 404, answerWant{"", false, "no entity user:9 in the feature store"}},
			{"fallback", 200, answerWant{"-1", true, "features: no entity user:9 in the feature store"}},
		} {
			status, m := predict(tc.app, `{"input": [7], "entity": {"user_id": "9"}}`)
			if status != tc.status || !tc.want.matches(m) {
				t.Errorf("%s: %d %v; want %d with %+v", tc.app, status, m, tc.status, tc.want)
			}
		}
	})
	t.Run("OIP with an entity input", func(t *testing.T) {
		status, m := e.post("/v2/models/defaults/infer", `{"inputs": [
			{"name": "input", "shape": [2, 1], "datatype": "FP64", "data": [5, 6]},
			{"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["1", "9"]}]}`)
		out, _ := m["outputs"].([]any)
		if status != 200 || len(out) != 1 || mustJSON(out[0].(map[string]any)["data"]) != "[5,4,0.5,6,-1,-2]" {
			t.Fatalf("%d %v", status, m)
		}
	})
	t.Run("features fill a named input", func(t *testing.T) {
		must(t, rdb.HSet(ctx, "user:1", "clicks", "4", "spend", "0.5").Err())
		status, m := e.post("/v2/models/layout/infer", `{"inputs": [
			{"name": "tail", "shape": [2, 1], "datatype": "FP64", "data": [5, 6]},
			{"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["1", "9"]},
			{"name": "dense", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}`)
		out, _ := m["outputs"].([]any)
		if status != 200 || len(out) != 1 || mustJSON(out[0].(map[string]any)["data"]) != "[1,2,4,0.5,5,3,4,-1,-2,6]" {
			t.Fatalf("OIP: %d %v; want dense, then the features, then tail", status, m)
		}
		if status, m := predict("layout", `{"input": [1, 2, 5], "entity": {"user_id": "1"}}`); status != 200 || mustJSON(m["output"]) != "[1,2,4,0.5,5]" {
			t.Fatalf("query API: %d %v; want [1,2,4,0.5,5]", status, m)
		}
		status, m = e.get("/v2/models/layout")
		var names []string
		ins, _ := m["inputs"].([]any)
		for _, in := range ins {
			names = append(names, in.(map[string]any)["name"].(string))
		}
		if status != 200 || strings.Join(names, ",") != "dense,tail,user_id" {
			t.Fatalf("metadata: %d %v; want the inputs dense, tail and user_id", status, m)
		}
	})
	t.Run("a layout of the features alone", func(t *testing.T) {
		status, m := e.post("/v2/models/only/infer", `{"inputs": [{"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["1", "9"]}]}`)
		out, _ := m["outputs"].([]any)
		if status != 200 || len(out) != 1 || mustJSON(out[0].(map[string]any)["data"]) != "[4,0.5,-1,-2]" {
			t.Fatalf("OIP: %d %v", status, m)
		}
		if status, m := predict("only", `{"input": [], "entity": {"user_id": "1"}}`); status != 200 || mustJSON(m["output"]) != "[4,0.5]" {
			t.Fatalf("query API: %d %v", status, m)
		}
	})
	t.Run("a named input, bad requests", func(t *testing.T) {
		const ids = `{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["1"]}`
		const dense = `{"name": "dense", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}`
		const tail = `{"name": "tail", "shape": [1, 1], "datatype": "FP64", "data": [5]}`
		for _, tc := range []struct{ inputs, want string }{
			{ids + "," + dense, `no input "tail": the app takes "dense" (size 2), "tail" (size 1), "user_id" (entity ids)`},
			{ids + "," + dense + "," + tail + `, {"name": "user", "shape": [1, 2], "datatype": "FP64", "data": [0, 0]}`, `input "user" is the app's looked-up features; leave it out`},
			{ids + "," + dense + "," + tail + `, {"name": "extra", "shape": [1, 1], "datatype": "FP64", "data": [0]}`, `unknown input "extra"`},
			{ids + "," + dense + "," + dense + "," + tail, `input "dense" appears twice`},
			{ids + `, {"name": "dense", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]},` + tail, `input "dense" row 0 has 3 values; the part holds 2`},
			{ids + `, {"name": "dense", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},` + tail, `input "dense" has datatype "FP32"; the model takes FP64`},
			{dense + "," + tail, `no input "user_id"`},
		} {
			status, m := e.post("/v2/models/layout/infer", `{"inputs": [`+tc.inputs+`]}`)
			if why, _ := m["error"].(string); status != 400 || !strings.Contains(why, tc.want) {
				t.Errorf("%s: %d %v; want 400 with %s", tc.inputs, status, m, tc.want)
			}
		}
		for body, want := range map[string]string{
			`{"input": [1, 2], "entity": {"user_id": "1"}}`:               `input has 2 values; app "layout" takes 3: its inputs "dense" (size 2), "tail" (size 1), one after the other`,
			`{"input_batch": [[1, 2, 5], [1]], "entity_batch": [{}, {}]}`: `input_batch[1] has 1 values; app "layout" takes 3`,
		} {
			if status, m := predict("layout", body); status != 400 || !strings.Contains(m["error"].(string), want) {
				t.Errorf("%s: %d %v; want 400 with %s", body, status, m, want)
			}
		}
	})
	t.Run("a job's input is the whole layout", func(t *testing.T) {
		answers, err := e.proxy.PredictJob(ctx, "layout", []json.RawMessage{json.RawMessage(`[1, 2, 3, 4, 5]`), json.RawMessage(`[1, 2, 5]`)})
		must(t, err)
		if string(answers[0].Output) != "[1,2,3,4,5]" || answers[0].Err != nil {
			t.Errorf("line 0: %s, %v; want the five values as sent", answers[0].Output, answers[0].Err)
		}
		if err := answers[1].Err; err == nil || !strings.Contains(err.Error(), `input has 3 values; app "layout" takes 5`) {
			t.Errorf("line 1: %s, %v; want the layout's width refused", answers[1].Output, err)
		}
	})
	t.Run("bad entity", func(t *testing.T) {
		for body, want := range map[string]string{
			`{"input": [7]}`: `entity has no "user_id"`,
			`{"input_batch": [[7]], "entity_batch": []}`:          `"entity_batch" has 0 objects for 1 inputs`,
			`{"input": [7], "entity": {"user_id": 1}}`:            "not the JSON object",
			`{"input_batch": [[7]], "entity_batch": [{"x": ""}]}`: `entity_batch[0] has no "user_id"`,
		} {
			if status, m := predict("defaults", body); status != 400 || !strings.Contains(m["error"].(string), want) {
				t.Errorf("%s: %d %v; want 400 with %s", body, status, m, want)
			}
		}
	})
	t.Run("a spec the state carries takes the place of the file's", func(t *testing.T) {
		must(t, rdb.HSet(ctx, "acct:eu:1", "score", "0.25").Err())
		setSpec := func(raw string) {
			t.Helper()
			must(t, e.store.UpdateApp(ctx, "defaults", func(a *state.App, _ []string) error {
				a.Features = nil
				if raw != "" {
					a.Features = json.RawMessage(raw)
				}
				return nil
			}))
		}
		setSpec(`{"key": "acct:{region}:{id}", "fields": [{"name": "score", "default": 9}], "into": "prepend", "redis": "` + store.Addr + `"}`)
		defer setSpec("")
		body := `{"input": [7], "entity": {"region": "eu", "id": "1"}}`
		if status, m := predict("defaults", body); status != 200 || mustJSON(m["output"]) != "[0.25,7]" {
			t.Fatalf("stored spec: %d %v; want [0.25,7]", status, m)
		}
		if status, m := predict("defaults", `{"input": [7], "entity": {"user_id": "1"}}`); status != 400 || !strings.Contains(m["error"].(string), `entity has no "region"`) {
			t.Fatalf("the file's entity under the stored spec: %d %v; want 400", status, m)
		}
		setSpec("")
		if status, m := predict("defaults", `{"input": [7], "entity": {"user_id": "1"}}`); status != 200 || mustJSON(m["output"]) != "[7,4,0.5]" {
			t.Fatalf("after clearing: %d %v; want the file's lookup again", status, m)
		}
	})
	t.Run("feature store stopped", func(t *testing.T) {
		store.Pause()
		defer store.Resume()
		// Entities no earlier query asked, so that no cached answer hides
		// the lookup.
		for _, tc := range []struct {
			app  string
			want answerWant
		}{
			{"defaults", answerWant{"[8,-1,-2]", false, ""}},
			{"fallback", answerWant{"-1", true, "features: the feature store did not answer within 30ms"}},
		} {
			status, m := predict(tc.app, `{"input": [8], "entity": {"user_id": "1"}}`)
			if status != 200 || !tc.want.matches(m) {
				t.Errorf("%s: %d %v; want %+v", tc.app, status, m, tc.want)
			}
		}
		if status, m := predict("notfound", `{"input": [8], "entity": {"user_id": "1"}}`); status != 503 {
			t.Errorf("notfound: %d %v; want 503: whether the entity exists is unknown", status, m)
		}
	})
}

// answerWant is what a query API answer must hold: its output as JSON
// ("" for an error), whether it is the default output, and a text its
// explanation or error contains.
type answerWant struct {
	output    string
	isDefault bool
	why       string
}

func (w answerWant) matches(m map[string]any) bool {
	why, _ := m["default_explanation"].(string)
	if w.output == "" {
		why, _ = m["error"].(string)
		return strings.Contains(why, w.why)
	}
	return mustJSON(m["output"]) == w.output && m["default"] == w.isDefault && strings.Contains(why, w.why)
}

// lookupCount is how many lookups app's histogram has counted.
func lookupCount(t *testing.T, reg *prometheus.Registry, app string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "sloproxy_feature_lookup_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == app {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}
