package proxy

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// addLinked registers an external model version at addr and links it to
// the existing app.
func (e *env) addLinked(app, model, addr string, it state.InputType) {
	e.t.Helper()
	ctx := context.Background()
	must(e.t, e.store.PutVersion(ctx, state.ModelVersion{Model: model, Version: "1", InputType: it, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}))
	must(e.t, e.store.SetReplicas(ctx, model, "1", []string{addr}))
	must(e.t, e.store.Link(ctx, app, model))
}

func TestFeedbackBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, nil)
	app := state.App{Name: "echo", InputType: state.InputString, SLO: 2 * time.Second, Policy: "exp3"}
	e.addModel(app, "a", noop(t, "string"))
	e.addLinked("echo", "b", noop(t, "string"), state.InputString)
	e.waitHealthy("b", "1")
	_, m := e.post("/apps/echo/predict", `{"input": "7"}`)
	id, _ := m["query_id"].(string)
	if id == "" || m["default"] != false {
		t.Fatalf("predict: %v", m)
	}
	before, _ := e.proxy.SelectionStatus(context.Background(), "echo")
	tests := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"unknown app", "/apps/nope/feedback", `{"query_id": "` + id + `", "label": "7"}`, 404, `no app named "nope"`},
		{"unknown query", "/apps/echo/feedback", `{"query_id": "x-1", "label": "7"}`, 404, `no recent query "x-1" of app "echo"`},
		{"unknown input", "/apps/echo/feedback", `{"input": "8", "label": "7"}`, 404, "no recent query of app \"echo\" had this input"},
		{"wrong label type", "/apps/echo/feedback", `{"query_id": "` + id + `", "label": [7]}`, 400, "not a string, number or boolean"},
		{"null label", "/apps/echo/feedback", `{"query_id": "` + id + `", "label": null}`, 400, "bad label"},
		{"no label", "/apps/echo/feedback", `{"query_id": "` + id + `"}`, 400, `no "label"`},
		{"both", "/apps/echo/feedback", `{"query_id": "` + id + `", "input": "7", "label": "7"}`, 400, "both"},
		{"neither", "/apps/echo/feedback", `{"label": "7"}`, 400, "neither"},
		{"not JSON", "/apps/echo/feedback", `{"query_id": `, 400, "not the JSON object"},
		{"input of the wrong type", "/apps/echo/feedback", `{"input": [1], "label": "7"}`, 400, "input"},
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
	if after, _ := e.proxy.SelectionStatus(context.Background(), "echo"); !reflect.DeepEqual(before, after) {
		t.Fatalf("bad feedback changed the policy: %+v → %+v", before, after)
	}
	// The query is still there to be scored, once.
	status, m := e.post("/apps/echo/feedback", `{"input": "7", "label": "6"}`)
	rewards, _ := m["rewards"].(map[string]any)
	if status != 200 || m["query_id"] != id || len(rewards) != 1 {
		t.Fatalf("feedback: %d %v", status, m)
	}
	if after, _ := e.proxy.SelectionStatus(context.Background(), "echo"); reflect.DeepEqual(before, after) {
		t.Fatalf("a wrong answer's feedback did not change the policy: %+v", after)
	}
	if status, m := e.post("/apps/echo/feedback", `{"query_id": "`+id+`", "label": "6"}`); status != 404 {
		t.Fatalf("second feedback for one query: %d %v", status, m)
	}
}

func TestEnsembleAnswersWithTheModelsThatAnswered(t *testing.T) {
	e := newEnv(t, nil)
	app := state.App{Name: "vote", InputType: state.InputFloat32, SLO: 300 * time.Millisecond, DefaultOutput: "-1", Policy: "exp4"}
	e.addModel(app, "a", noop(t, "float32"))
	e.addLinked("vote", "b", noop(t, "float32"), state.InputFloat32)
	slow := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--a", "3s", "--b", "0"}).Addr
	e.addLinked("vote", "slow", slow, state.InputFloat32)
	e.waitHealthy("b", "1")
	e.waitHealthy("slow", "1")
	status, m := e.post("/apps/vote/predict", `{"input": [2]}`)
	if status != 200 || m["default"] != false || m["model"] != "ensemble" {
		t.Fatalf("%d %v", status, m)
	}
	if got := mustJSON(m["models"]); got != `["a:1","b:1"]` {
		t.Errorf("models %s; want a:1 and b:1", got)
	}
	if got := mustJSON(m["missing"]); got != `["slow:1"]` {
		t.Errorf("missing %s; want slow:1", got)
	}
	// Without the fast models, nobody answers: the default output, with
	// the missing listed.
	must(t, e.store.Unlink(context.Background(), "vote", "a"))
	must(t, e.store.Unlink(context.Background(), "vote", "b"))
	testutil.Eventually(t, 5*time.Second, "the unlinks reach the proxy", func() bool {
		return len(e.proxy.opts.Store.Snapshot().ModelsOf("vote")) == 1
	})
	_, m = e.post("/apps/vote/predict", `{"input": [2]}`)
	if m["default"] != true || mustJSON(m["missing"]) != `["slow:1"]` || mustJSON(m["output"]) != "-1" {
		t.Fatalf("with only the slow model: %v", m)
	}
}

func TestShadowIsRecordedNeverReturned(t *testing.T) {
	e := newEnv(t, nil)
	app := state.App{Name: "echo", InputType: state.InputString, SLO: 2 * time.Second, Policy: "exp3"}
	e.addModel(app, "a", noop(t, "string"))
	e.addLinked("echo", "shadow", noop(t, "string"), state.InputString)
	e.waitHealthy("shadow", "1")
	e.proxy.ApplySelection(map[string]selection.Spec{"echo": {Policy: "exp3", Shadow: "shadow"}})
	var id string
	for i := range 20 {
		_, m := e.post("/apps/echo/predict", `{"input": "7"}`)
		if m["model"] != "a:1" {
			t.Fatalf("query %d answered by %v; the shadow must never answer", i, m["model"])
		}
		id, _ = m["query_id"].(string)
	}
	agreed := func() float64 {
		return counterSum(t, e.reg, "sloproxy_selection_shadow_total", "app", "echo", "model", "shadow", "agree", "true")
	}
	testutil.Eventually(t, 5*time.Second, "the shadow's 20 answers compared", func() bool { return agreed() == 20 })
	_, m := e.post("/apps/echo/feedback", `{"query_id": "`+id+`", "label": 7}`)
	if got := mustJSON(m["rewards"]); got != `{"a":1,"shadow":1}` {
		t.Errorf("rewards %s; want both the answer and the shadow's scored", got)
	}
}

// TestShadowFailureIsOnlyMissing: a shadow whose replica fails counts as
// missing in the shadow's metric and nowhere else: no line claims a
// default output for it, which only the app's answer has.
func TestShadowFailureIsOnlyMissing(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	e := newEnvOpts(t, Options{Store: state.NewStore(nil, state.Options{}), Registry: reg,
		MaxBodyBytes: 1 << 16, MaxInputBatch: 8, Logger: zap.New(core),
		// One attempt: the lost connection is the shadow's answer.
		Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond, MaxAttempts: 1}})
	app := state.App{Name: "echo", InputType: state.InputFloat32, SLO: 2 * time.Second, DefaultOutput: "-1", Policy: "exp3"}
	e.addModel(app, "a", noop(t, "float32"))
	e.addLinked("echo", "dies", diesModel(t), state.InputFloat32)
	e.waitHealthy("dies", "1")
	e.proxy.ApplySelection(map[string]selection.Spec{"echo": {Policy: "exp3", Shadow: "dies"}})
	if status, m := e.post("/apps/echo/predict", `{"input": [7]}`); status != 200 || m["model"] != "a:1" || m["default"] != false {
		t.Fatalf("%d %v; want a:1's answer", status, m)
	}
	testutil.Eventually(t, 5*time.Second, "the shadow counted as missing", func() bool {
		return counterSum(t, reg, "sloproxy_selection_shadow_total", "app", "echo", "model", "dies", "agree", "missing") == 1
	})
	if n := logs.FilterMessageSnippet("default output").Len(); n != 0 {
		t.Fatalf("%d log lines claim a default output: %+v", n, logs.All())
	}
}

// TestFeedbackThroughAnyProxy runs two proxies on one real Redis that
// share their answered queries: feedback sent to the proxy that did not
// answer scores the query, once across both, by id or by input, with the
// shadow's answer too.
func TestFeedbackThroughAnyProxy(t *testing.T) {
	addr := testutil.StartRedis(t)
	envs := [2]*env{newRedisEnv(t, addr, "fb:"), newRedisEnv(t, addr, "fb:")}
	a, b := envs[0], envs[1]
	a.addModel(state.App{Name: "echo", InputType: state.InputString, SLO: 2 * time.Second, Policy: "exp3"}, "m", noop(t, "string"))
	a.addLinked("echo", "shadow", noop(t, "string"), state.InputString)
	spec := map[string]selection.Spec{"echo": {Policy: "exp3", Shadow: "shadow"}}
	for _, e := range envs {
		e.proxy.ApplySelection(spec)
		e.waitHealthy("m", "1")
		e.waitHealthy("shadow", "1")
	}
	query := func(input string) string {
		t.Helper()
		status, m := a.post("/apps/echo/predict", `{"input": "`+input+`"}`)
		id, _ := m["query_id"].(string)
		if status != 200 || m["default"] != false || id == "" {
			t.Fatalf("predict through A: %d %v", status, m)
		}
		return id
	}
	// feedback posts body to e until the query's write reaches Redis (a
	// 404 until then), and returns the answer.
	feedback := func(e *env, body string) map[string]any {
		t.Helper()
		var m map[string]any
		testutil.Eventually(t, 5*time.Second, "the feedback "+body+" is accepted", func() bool {
			var status int
			status, m = e.post("/apps/echo/feedback", body)
			return status == 200
		})
		return m
	}

	// The shadow answers in the background, and A writes its answer to
	// Redis after the query's: a feedback before that would score the
	// query without it.
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	shadowInRedis := func(id string) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, "the shadow's answer to "+id+" reaches Redis", func() bool {
			return rdb.HExists(context.Background(), "fb:recent:q:"+id, "s").Val()
		})
	}

	id := query("7")
	shadowInRedis(id)
	m := feedback(b, `{"query_id": "`+id+`", "label": "6"}`)
	if m["query_id"] != id || mustJSON(m["rewards"]) != `{"m":0,"shadow":0}` {
		t.Errorf("feedback through B: %v; want the query %s with m's and the shadow's rewards, 0 each", m, id)
	}
	for i, e := range envs {
		if status, m := e.post("/apps/echo/feedback", `{"query_id": "`+id+`", "label": "6"}`); status != 404 {
			t.Errorf("second feedback for %s through proxy %d: %d %v; want 404, scored once", id, i, status, m)
		}
	}
	id = query("8")
	shadowInRedis(id)
	if m := feedback(b, `{"input": "8", "label": 8}`); m["query_id"] != id || mustJSON(m["rewards"]) != `{"m":1,"shadow":1}` {
		t.Errorf("feedback by input through B: %v; want the query %s, rewards 1", m, id)
	}
	if status, m := a.post("/apps/echo/feedback", `{"query_id": "`+id+`", "label": 8}`); status != 404 {
		t.Errorf("feedback through A for a query B scored: %d %v; want 404", status, m)
	}
	statusA, err := a.proxy.SelectionStatus(context.Background(), "echo")
	must(t, err)
	statusB, err := b.proxy.SelectionStatus(context.Background(), "echo")
	must(t, err)
	if !reflect.DeepEqual(statusA, statusB) {
		t.Errorf("the proxies learned differently: %+v and %+v", statusA, statusB)
	}
}
