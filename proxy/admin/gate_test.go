package admin

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/containers/profile"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/state"
)

// gateEnv is an admin API with the real profiler over a memory Store
// holding app fast (float32, SLO 50ms) and model cm, whose version 1 is a
// real cost model process taking 200 ms + 1 ms·n and version 2 one taking
// 1 ms + 0.1 ms·n, both live; version 1 is current. Warnings the API logs
// are in logs.
type gateEnv struct {
	store *state.Store
	logs  *observer.ObservedLogs
	call  func(method, path, body string) answer
}

func newGateEnv(t *testing.T) *gateEnv {
	t.Helper()
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	slow := testutil.StartModel(t, []string{costmodel, "--a", "200ms", "--b", "1ms"})
	fast := testutil.StartModel(t, []string{costmodel, "--a", "1ms", "--b", "100us"})
	s := state.NewStore(nil, state.Options{})
	ctx := t.Context()
	must(t, s.PutApp(ctx, state.App{Name: "fast", InputType: state.InputFloat32, SLO: 50 * time.Millisecond}))
	for v, addr := range []string{slow.Addr, fast.Addr} { // in order: the first registered is current
		v := strconv.Itoa(v + 1)
		must(t, s.PutVersion(ctx, state.ModelVersion{Model: "cm", Version: v, InputType: state.InputFloat32, Replicas: 1, BatchSize: 2,
			ExampleInput: []byte(`[0.5, 1]`), Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}))
		must(t, s.SetReplicas(ctx, "cm", v, []string{addr}))
	}
	core, logs := observer.New(zapcore.WarnLevel)
	// Few repetitions: the numbers checked are 4 times apart.
	prof := profile.Profiler{Encode: proxy.EncodeInput, DefaultBatch: 8, Options: profile.Options{Repeats: 3, Warmup: 1}}
	srv := startAPI(t, s, Options{Token: testToken, Logger: zap.New(core), Profiler: prof, ReplicaWait: 2 * time.Second})
	return &gateEnv{store: s, logs: logs, call: func(method, path, body string) answer {
		return call(t, srv, method, path, "", body)
	}}
}

// TestGate links, sets current and sets a canary share to a version whose
// batch of one takes 200 ms for an app with a 50 ms SLO: each is refused,
// naming the profile's p99 and the SLO, until forced; the forced change is
// logged at warn. A version that meets the SLO passes.
func TestGate(t *testing.T) {
	e := newGateEnv(t)
	refusal := regexp.MustCompile(`^gate: model "cm" version "1" cannot meet app "fast"'s SLO of 50ms: its profile's batch 1 line has p99 2\d\d(\.\d)?ms \(p50 2\d\d(\.\d)?ms, [0-9.]+/s per replica, profiled [^)]+\); pass force`)
	refused := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusConflict {
			t.Fatalf("%s: %d %s, want 409", what, a.status, a.body)
		}
		msg := a.errorMessage(t)
		t.Logf("%s refused: %s", what, msg)
		if !refusal.MatchString(msg) {
			t.Errorf("%s: refusal %q does not name the profile's batch-1 p99 and the SLO as %v", what, msg, refusal)
		}
	}
	accepted := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d %s, want 200", what, a.status, a.body)
		}
	}

	refused("link", e.call(http.MethodPut, "/api/v1/apps/fast/links/cm", ""))
	if p, ok := e.store.Snapshot().Profile("cm", "1"); !ok || p.Input != "example" || len(p.Lines) != 2 {
		t.Errorf("the gate stored profile %+v, %v; want one of batches 1 and 2 from the example input", p, ok)
	}
	if n := e.logs.Len(); n != 0 {
		t.Errorf("%d warnings before any force", n)
	}
	accepted("link with force", e.call(http.MethodPut, "/api/v1/apps/fast/links/cm", `{"force": true}`))
	if w := e.logs.FilterMessageSnippet("gate overridden with force").Len(); w != 1 {
		t.Errorf("%d warnings of a forced gate, want 1", w)
	}

	accepted("set current to the version that meets the SLO", e.call(http.MethodPut, "/api/v1/models/cm/current", `{"version": "2"}`))
	profiled := e.store.Snapshot().Revision()
	refused("roll back to the slow version", e.call(http.MethodPut, "/api/v1/models/cm/current", `{"version": "1"}`))
	if e.store.Snapshot().Revision() != profiled {
		t.Errorf("the refused rollback changed the state: the gate should use the fresh profile and change nothing")
	}
	refused("a canary share for the slow version", e.call(http.MethodPut, "/api/v1/apps/fast/selection",
		`{"policy": "weighted", "shares": {"cm": 9, "cm:1": 1}}`))
	accepted("the canary share with force", e.call(http.MethodPut, "/api/v1/apps/fast/selection?force=true",
		`{"policy": "weighted", "shares": {"cm": 9, "cm:1": 1}}`))
	accepted("roll back with force", e.call(http.MethodPut, "/api/v1/models/cm/current", `{"version": "1", "force": true}`))
	if cur, _ := e.store.Snapshot().Current("cm"); cur.Version != "1" {
		t.Errorf("current version %q after the forced rollback, want 1", cur.Version)
	}
	if w := e.logs.FilterMessageSnippet("gate overridden with force").Len(); w != 3 {
		t.Errorf("%d warnings of a forced gate, want 3", w)
	}
}

// TestProfileEndpoint profiles through the API with the request's inputs,
// reads the stored profile back, and checks the errors.
func TestProfileEndpoint(t *testing.T) {
	e := newGateEnv(t)
	a := e.call(http.MethodPost, "/api/v1/models/cm/versions/2/profile", `{"inputs": [[1, 2], [3]], "repeats": 3}`)
	if a.status != http.StatusOK {
		t.Fatalf("profile: %d %s", a.status, a.body)
	}
	var v ProfileView
	a.decodeInto(t, &v)
	if v.Profile.Input != "request" || len(v.Profile.Lines) != 2 || v.Profile.Lines[0].Samples != 3 || len(v.Apps) != 0 {
		t.Errorf("profile %+v: want 2 lines of 3 samples from the request's inputs, no apps", v)
	}
	got := e.call(http.MethodGet, "/api/v1/models/cm/versions/2/profile", "")
	var stored ProfileView
	got.decodeInto(t, &stored)
	if got.status != http.StatusOK || !stored.Profile.At.Equal(v.Profile.At) {
		t.Errorf("stored profile: %d %+v, want the one just taken", got.status, stored)
	}
	model := e.call(http.MethodGet, "/api/v1/models/cm", "")
	var m ModelView
	model.decodeInto(t, &m)
	if vv, _ := m.Version("2"); vv.Profile == nil || !vv.Profile.Profile.At.Equal(v.Profile.At) {
		t.Errorf("GET model shows version 2's profile as %+v, want the one just taken", vv.Profile)
	}
	// A version whose replica registers while the request waits is
	// profiled (register, then link at once); one with none is refused
	// after ReplicaWait.
	addr := e.store.Snapshot().Replicas("cm", "2")
	must(t, e.store.SetReplicas(t.Context(), "cm", "2", nil))
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = e.store.SetReplicas(context.Background(), "cm", "2", addr)
	}()
	if a := e.call(http.MethodPost, "/api/v1/models/cm/versions/2/profile", `{"repeats": 3}`); a.status != http.StatusOK {
		t.Errorf("profile of a version whose replica comes up while it waits: %d %s", a.status, a.body)
	}
	must(t, e.store.SetReplicas(t.Context(), "cm", "1", nil))
	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/api/v1/models/cm/versions/2/profile", `{"inputs": ["x"]}`, 400, "inputs[0]"},
		{"/api/v1/models/cm/versions/2/profile", `{"repeats": -1}`, 400, "repeats -1"},
		{"/api/v1/models/cm/versions/9/profile", ``, 404, `model "cm" version "9"`},
		{"/api/v1/models/cm/versions/1/profile", ``, 409, "no live replica"},
	} {
		a := e.call(http.MethodPost, c.path, c.body)
		if msg := a.errorMessage(t); a.status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("POST %s %s: %d %q, want %d naming %q", c.path, c.body, a.status, msg, c.status, c.want)
		}
	}
	if a := e.call(http.MethodGet, "/api/v1/models/cm/versions/1/profile", ""); a.status != http.StatusNotFound {
		t.Errorf("GET the profile of a version never profiled: %d, want 404", a.status)
	}
}

// TestNoProfiler checks that without a profiler nothing is gated and the
// profile endpoint says it cannot.
func TestNoProfiler(t *testing.T) {
	s := state.NewStore(nil, state.Options{})
	seed(t, s)
	srv := startAPI(t, s, Options{Token: testToken})
	if a := call(t, srv, http.MethodPost, "/api/v1/models/mnist/versions/1/profile", "", ""); a.status != http.StatusNotImplemented {
		t.Errorf("profile without a profiler: %d %s, want 501", a.status, a.body)
	}
	if a := call(t, srv, http.MethodPut, "/api/v1/models/mnist/current", "", `{"version": "2"}`); a.status != http.StatusOK {
		t.Errorf("set current without a profiler: %d %s, want 200", a.status, a.body)
	}
}

// TestProfileCost checks the per-app answer of a profile: the largest
// batch within the SLO, and its cost per 1,000 predictions where the
// version has a price.
func TestProfileCost(t *testing.T) {
	s := state.NewStore(nil, state.Options{})
	seed(t, s) // app digits (SLO 50 ms) links model mnist
	p := state.Profile{At: time.Now(), Replicas: 1, A: 20 * time.Millisecond, B: 2 * time.Millisecond, Tail: 2 * time.Millisecond,
		Lines: []state.ProfileLine{{Batch: 1, P99: 24 * time.Millisecond}, {Batch: 16, P99: 54 * time.Millisecond}}}
	must(t, s.SetProfile(t.Context(), "mnist", "1", p))
	must(t, s.SetProfile(t.Context(), "mnist", "2", p))
	price := func(model, version string) (float64, bool) { return 3.6, version == "1" } // $3.60 an hour: $0.001 a second
	srv := startAPI(t, s, Options{Token: testToken, Price: price})
	var m ModelView
	call(t, srv, http.MethodGet, "/api/v1/models/mnist", "", "").decodeInto(t, &m)
	v1, _ := m.Version("1")
	v2, _ := m.Version("2")
	if v1.Profile == nil || len(v1.Profile.Apps) != 1 || v2.Profile == nil || len(v2.Profile.Apps) != 1 {
		t.Fatalf("profiles %+v, %+v: want each with app digits", v1.Profile, v2.Profile)
	}
	// (50 - 20 - 2) / 2 = 14 items; a replica answers 14 / 48 ms = 291.7/s.
	fit := v1.Profile.Apps[0]
	if fit.App != "digits" || !fit.MeetsSLO || fit.LargestBatch != 14 || fit.CostPer1K == nil {
		t.Fatalf("digits: %+v, want the SLO met, largest batch 14, a cost", fit)
	}
	if want := 0.001 / (14 / 0.048) * 1000; *fit.CostPer1K < want*0.999 || *fit.CostPer1K > want*1.001 {
		t.Errorf("cost per 1,000 = %v, want %v", *fit.CostPer1K, want)
	}
	if v2.Profile.Apps[0].CostPer1K != nil {
		t.Errorf("a version without a price has a cost: %v", *v2.Profile.Apps[0].CostPer1K)
	}
}
