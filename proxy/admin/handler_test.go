package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// purgeRecorder is an Options.Purge that records its calls.
type purgeRecorder struct {
	mu    sync.Mutex // guards calls
	calls []string
	err   error
}

func (p *purgeRecorder) purge(ctx context.Context, app, model string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "app="+app+" model="+model)
	return p.err
}

// apiCase is one request against the seeded state, with the answer and
// the state change it should cause.
type apiCase struct {
	name         string
	method, path string
	auth         string // "" the right token, noAuth none, else the Authorization header
	body         string
	token        *string        // the handler's Options.Token; nil means testToken
	purge        *purgeRecorder // nil means Options.Purge is nil
	wantStatus   int
	wantError    string                                   // a substring of the {"error"} message, for error answers
	wantHeader   map[string]string                        // headers the answer must have, by substring
	check        func(t *testing.T, a answer)             // checks the answer's body
	checkState   func(t *testing.T, snap *state.Snapshot) // checks the state afterwards
	checkPurge   []string                                 // the purge calls made
	seedDisabled bool                                     // start from the empty state
}

func TestAPI(t *testing.T) {
	empty := ""
	cases := []apiCase{
		// Health.
		{name: "healthz needs no token", method: "GET", path: "/api/v1/healthz", auth: noAuth, wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var h Health
				a.decodeInto(t, &h)
				if h.Status != "ok" {
					t.Errorf("status %q; want ok", h.Status)
				}
			}},

		// Apps: success.
		{name: "list apps", method: "GET", path: "/api/v1/apps", wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var l AppList
				a.decodeInto(t, &l)
				if len(l.Apps) != 2 || l.Apps[0].Name != "digits" || l.Apps[1].Name != "spam" {
					t.Fatalf("apps %+v; want digits, spam", l.Apps)
				}
				if !slices.Equal(l.Apps[0].Models, []string{"mnist"}) || l.Apps[1].Models == nil || len(l.Apps[1].Models) != 0 {
					t.Errorf("models %v, %#v; want [mnist] and []", l.Apps[0].Models, l.Apps[1].Models)
				}
			}},
		{name: "list apps when there are none", method: "GET", path: "/api/v1/apps", seedDisabled: true, wantStatus: 200,
			check: func(t *testing.T, a answer) {
				if got := strings.Join(strings.Fields(string(a.body)), ""); got != `{"apps":[]}` {
					t.Errorf("body %s; want {\"apps\": []}", a.body)
				}
			}},
		{name: "get app", method: "GET", path: "/api/v1/apps/digits", wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var v AppView
				a.decodeInto(t, &v)
				want := AppView{App: App{Name: "digits", InputType: "float32", SLOMillis: 50, DefaultOutput: "-1", Priority: 1}, Models: []string{"mnist"}}
				if !equalApps(v, want) {
					t.Errorf("got %+v; want %+v", v, want)
				}
			}},
		{name: "create app", method: "POST", path: "/api/v1/apps",
			body:       `{"name": "faces", "input_type": "bytes", "slo_ms": 12.5, "default_output": "none", "policy": "exp3", "priority": -1}`,
			wantStatus: 201, wantHeader: map[string]string{"Location": "/api/v1/apps/faces", "Content-Type": "application/json"},
			checkState: func(t *testing.T, snap *state.Snapshot) {
				want := state.App{Name: "faces", InputType: state.InputBytes, SLO: 12500 * time.Microsecond, DefaultOutput: "none", Policy: "exp3", Priority: -1}
				if a, _ := snap.App("faces"); !reflect.DeepEqual(a, want) {
					t.Errorf("app %+v; want %+v", a, want)
				}
			}},
		{name: "replace app", method: "PUT", path: "/api/v1/apps/spam", body: `{"input_type": "string", "slo_ms": 100}`, wantStatus: 200,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if a, _ := snap.App("spam"); a.SLO != 100*time.Millisecond {
					t.Errorf("SLO %v; want 100ms", a.SLO)
				}
			}},
		{name: "put creates app", method: "PUT", path: "/api/v1/apps/new", body: `{"name": "new", "input_type": "int32", "slo_ms": 5}`,
			wantStatus: 201, wantHeader: map[string]string{"Location": "/api/v1/apps/new"},
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.App("new"); !ok {
					t.Error("app new not created")
				}
			}},
		{name: "delete app", method: "DELETE", path: "/api/v1/apps/digits", wantStatus: 204,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.App("digits"); ok || len(snap.AppsOf("mnist")) != 0 {
					t.Error("app digits or its link still there")
				}
			}},
		{name: "link", method: "PUT", path: "/api/v1/apps/spam/links/echo", wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var v AppView
				a.decodeInto(t, &v)
				if !slices.Equal(v.Models, []string{"echo"}) {
					t.Errorf("models %v; want [echo]", v.Models)
				}
			}},
		{name: "link twice is not an error", method: "PUT", path: "/api/v1/apps/digits/links/mnist", wantStatus: 200},
		{name: "unlink", method: "DELETE", path: "/api/v1/apps/digits/links/mnist", wantStatus: 200,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if len(snap.ModelsOf("digits")) != 0 {
					t.Errorf("digits still uses %v", snap.ModelsOf("digits"))
				}
			}},
		{name: "unlink what is not linked is not an error", method: "DELETE", path: "/api/v1/apps/spam/links/echo", wantStatus: 200},

		// Models: success.
		{name: "list models", method: "GET", path: "/api/v1/models", wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var l ModelList
				a.decodeInto(t, &l)
				if len(l.Models) != 2 || l.Models[0].Name != "echo" || l.Models[1].Name != "mnist" {
					t.Errorf("models %+v; want echo, mnist", l.Models)
				}
			}},
		{name: "get model", method: "GET", path: "/api/v1/models/mnist", wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var m ModelView
				a.decodeInto(t, &m)
				if m.Name != "mnist" || m.CurrentVersion != "1" || m.InputType != "float32" || !slices.Equal(m.Apps, []string{"digits"}) || len(m.Versions) != 2 {
					t.Fatalf("model %+v", m)
				}
				v1, v2 := m.Versions[0], m.Versions[1]
				if v1.Version != "1" || !v1.Current || v1.Replicas != 1 || v1.BatchSize != 8 || !slices.Equal(v1.LiveReplicas, []string{"127.0.0.1:7001"}) ||
					!slices.Equal(v1.Runtime.Command, []string{"/bin/mnist", "--version", "1"}) {
					t.Errorf("version 1: %+v", v1)
				}
				if v2.Version != "2" || v2.Current || v2.LiveReplicas == nil || len(v2.LiveReplicas) != 0 {
					t.Errorf("version 2: %+v; want not current, live_replicas []", v2)
				}
			}},
		{name: "register version", method: "POST", path: "/api/v1/models/mnist/versions",
			body:       `{"version": "3", "input_type": "float32", "runtime": {"kind": "docker", "image": "mnist:3", "gpus": 1}, "replicas": 2, "batch_size": 32, "labels": {"framework": "onnx"}}`,
			wantStatus: 201, wantHeader: map[string]string{"Location": "/api/v1/models/mnist"},
			checkState: func(t *testing.T, snap *state.Snapshot) {
				v, ok := snap.Version("mnist", "3")
				if !ok || v.Runtime.Image != "mnist:3" || v.Runtime.GPUs != 1 || v.Replicas != 2 || v.BatchSize != 32 || v.Labels["framework"] != "onnx" {
					t.Errorf("version 3: %+v, %v", v, ok)
				}
				if cur, _ := snap.Current("mnist"); cur.Version != "1" {
					t.Errorf("current %q; a later version must not become current", cur.Version)
				}
			}},
		{name: "register first version creates the model, current, one replica by default", method: "POST", path: "/api/v1/models/faces/versions",
			body:       `{"version": "a", "input_type": "bytes", "runtime": {"kind": "external", "addresses": ["10.0.0.1:7000"]}}`,
			wantStatus: 201,
			check: func(t *testing.T, a answer) {
				var m ModelView
				a.decodeInto(t, &m)
				if m.Name != "faces" || m.CurrentVersion != "a" || len(m.Versions) != 1 || m.Versions[0].Replicas != 1 {
					t.Errorf("model %+v", m)
				}
			}},
		{name: "register the same spec again is a retry", method: "POST", path: "/api/v1/models/mnist/versions",
			body:       `{"model": "mnist", "version": "2", "input_type": "float32", "runtime": {"kind": "process", "command": ["/bin/mnist", "--version", "2"], "env": {}}, "replicas": 1, "batch_size": 8}`,
			wantStatus: 200},
		{name: "rollback", method: "PUT", path: "/api/v1/models/mnist/current", body: `{"version": "2"}`, wantStatus: 200,
			check: func(t *testing.T, a answer) {
				var m ModelView
				a.decodeInto(t, &m)
				if m.CurrentVersion != "2" {
					t.Errorf("current %q; want 2", m.CurrentVersion)
				}
			}},
		{name: "scale", method: "PUT", path: "/api/v1/models/mnist/versions/1/replicas", body: `{"replicas": 3}`, wantStatus: 200,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				want := mnist("1")
				want.Replicas = 3
				if v, _ := snap.Version("mnist", "1"); !sameSpec(v, want) {
					t.Errorf("version 1: %+v; want %+v (only replicas changed)", v, want)
				}
			}},
		{name: "delete version", method: "DELETE", path: "/api/v1/models/mnist/versions/2", wantStatus: 204,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.Version("mnist", "2"); ok {
					t.Error("version 2 still there")
				}
			}},
		{name: "delete last version deletes the model", method: "DELETE", path: "/api/v1/models/echo/versions/1", wantStatus: 204,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.Model("echo"); ok {
					t.Error("model echo still there")
				}
			}},

		// Cache purge.
		{name: "purge app", method: "POST", path: "/api/v1/cache/purge", body: `{"app": "digits"}`, purge: &purgeRecorder{},
			wantStatus: 204, checkPurge: []string{"app=digits model="}},
		{name: "purge model", method: "POST", path: "/api/v1/cache/purge", body: `{"model": "mnist"}`, purge: &purgeRecorder{},
			wantStatus: 204, checkPurge: []string{"app= model=mnist"}},
		{name: "purge without a cache", method: "POST", path: "/api/v1/cache/purge", body: `{"app": "digits"}`,
			wantStatus: 501, wantError: "no prediction cache"},
		{name: "purge both", method: "POST", path: "/api/v1/cache/purge", body: `{"app": "digits", "model": "mnist"}`, purge: &purgeRecorder{},
			wantStatus: 400, wantError: "exactly one of app and model", checkPurge: []string{}},
		{name: "purge unknown app", method: "POST", path: "/api/v1/cache/purge", body: `{"app": "nope"}`, purge: &purgeRecorder{},
			wantStatus: 404, wantError: `app "nope"`, checkPurge: []string{}},
		{name: "purge fails", method: "POST", path: "/api/v1/cache/purge", body: `{"model": "mnist"}`, purge: &purgeRecorder{err: errors.New("redis: boom")},
			wantStatus: 500, wantError: "cache purge: redis: boom"},

		// 401.
		{name: "no token", method: "GET", path: "/api/v1/apps", auth: noAuth,
			wantStatus: 401, wantError: "missing bearer token", wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="sloproxy-admin"`}},
		{name: "wrong token", method: "GET", path: "/api/v1/apps", auth: "Bearer nope",
			wantStatus: 401, wantError: "invalid bearer token", wantHeader: map[string]string{"WWW-Authenticate": `error="invalid_token"`}},
		{name: "token prefix is wrong", method: "GET", path: "/api/v1/apps", auth: "Bearer " + testToken[:4],
			wantStatus: 401, wantError: "invalid bearer token"},
		{name: "basic scheme", method: "GET", path: "/api/v1/apps", auth: "Basic YWRtaW46YWRtaW4=",
			wantStatus: 401, wantError: "Bearer scheme"},
		{name: "bearer without a token", method: "GET", path: "/api/v1/apps", auth: "Bearer", wantStatus: 401, wantError: "invalid bearer token"},
		{name: "no token on a change", method: "DELETE", path: "/api/v1/apps/digits", auth: noAuth, wantStatus: 401,
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.App("digits"); !ok {
					t.Error("app deleted without a token")
				}
			}},
		{name: "no token on an unknown path", method: "GET", path: "/api/v2/nothing", auth: noAuth, wantStatus: 401},
		{name: "empty configured token fails closed", method: "GET", path: "/api/v1/apps", auth: "Bearer anything", token: &empty,
			wantStatus: 401, wantError: "invalid bearer token"},

		// 400.
		{name: "truncated JSON", method: "POST", path: "/api/v1/apps", body: `{"name": "x"`, wantStatus: 400, wantError: "request body"},
		{name: "malformed JSON", method: "POST", path: "/api/v1/apps", body: `{"name": x}`, wantStatus: 400, wantError: "malformed JSON"},
		{name: "empty body", method: "POST", path: "/api/v1/apps", wantStatus: 400, wantError: "empty"},
		{name: "two objects", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "bytes", "slo_ms": 1} {}`, wantStatus: 400, wantError: "one JSON object"},
		{name: "not an object", method: "POST", path: "/api/v1/apps", body: `[1, 2]`, wantStatus: 400, wantError: "want a JSON object"},
		{name: "field of the wrong type", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": 3, "slo_ms": 1}`,
			wantStatus: 400, wantError: `field "input_type": want a JSON string, got a JSON number`},
		{name: "hugely negative SLO", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "bytes", "slo_ms": -1e300}`,
			wantStatus: 400, wantError: "must be positive"},
		{name: "unknown field", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "bytes", "slo_ms": 1, "colour": "red"}`,
			wantStatus: 400, wantError: `unknown field "colour"`},
		{name: "unknown nested field", method: "POST", path: "/api/v1/models/mnist/versions",
			body:       `{"version": "9", "input_type": "float32", "runtime": {"kind": "process", "command": ["x"], "imagee": "y"}}`,
			wantStatus: 400, wantError: `unknown field "imagee"`},
		{name: "output field in a request", method: "PUT", path: "/api/v1/apps/spam", body: `{"input_type": "string", "slo_ms": 5, "models": ["echo"]}`,
			wantStatus: 400, wantError: `unknown field "models"`},
		{name: "wrong field type", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "bytes", "slo_ms": "fast"}`,
			wantStatus: 400, wantError: "slo_ms"},
		{name: "invalid name", method: "POST", path: "/api/v1/apps", body: `{"name": "Bad Name", "input_type": "bytes", "slo_ms": 1}`,
			wantStatus: 400, wantError: `app "Bad Name": name`},
		{name: "invalid name in the path", method: "GET", path: "/api/v1/apps/Bad_Name", wantStatus: 400, wantError: `app name "Bad_Name" in the path`},
		{name: "bad input type", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "float16", "slo_ms": 1}`,
			wantStatus: 400, wantError: `input_type "float16"`},
		{name: "bad input type of a version", method: "POST", path: "/api/v1/models/m/versions", body: `{"version": "1", "input_type": "int64", "runtime": {"kind": "external", "addresses": ["h:1"]}}`,
			wantStatus: 400, wantError: `input_type "int64"`},
		{name: "missing SLO", method: "POST", path: "/api/v1/apps", body: `{"name": "a", "input_type": "bytes"}`, wantStatus: 400, wantError: "slo_ms"},
		{name: "name differs from the path", method: "PUT", path: "/api/v1/apps/spam", body: `{"name": "other", "input_type": "string", "slo_ms": 5}`,
			wantStatus: 400, wantError: "differs from the path"},
		{name: "model differs from the path", method: "POST", path: "/api/v1/models/mnist/versions", body: `{"model": "other", "version": "9", "input_type": "float32", "runtime": {"kind": "process", "command": ["x"]}}`,
			wantStatus: 400, wantError: "differs from the path"},
		{name: "runtime field of another kind", method: "POST", path: "/api/v1/models/mnist/versions", body: `{"version": "9", "input_type": "float32", "runtime": {"kind": "process", "command": ["x"], "image": "y"}}`,
			wantStatus: 400, wantError: "runtime.image"},
		{name: "unknown runtime", method: "POST", path: "/api/v1/models/mnist/versions", body: `{"version": "9", "input_type": "float32", "runtime": {"kind": "vm"}}`,
			wantStatus: 400, wantError: `runtime.kind "vm"`},
		{name: "zero replicas", method: "PUT", path: "/api/v1/models/mnist/versions/1/replicas", body: `{"replicas": 0}`, wantStatus: 400, wantError: "replicas 0"},
		{name: "replicas above the limit", method: "PUT", path: "/api/v1/models/mnist/versions/1/replicas", body: `{"replicas": 1000000000}`,
			wantStatus: 400, wantError: "replicas 1000000000: above limits.max_replicas (32)"},
		{name: "register a version above the replica limit", method: "POST", path: "/api/v1/models/mnist/versions",
			body:       `{"version": "9", "input_type": "float32", "runtime": {"kind": "process", "command": ["x"]}, "replicas": 33}`,
			wantStatus: 400, wantError: "replicas 33: above limits.max_replicas (32)"},
		{name: "replicas missing", method: "PUT", path: "/api/v1/models/mnist/versions/1/replicas", body: `{}`, wantStatus: 400, wantError: "replicas: required"},
		{name: "current version missing", method: "PUT", path: "/api/v1/models/mnist/current", body: `{}`, wantStatus: 400, wantError: "version: required"},

		// 404 and 405.
		{name: "unknown app", method: "GET", path: "/api/v1/apps/nope", wantStatus: 404, wantError: `app "nope"`},
		{name: "delete unknown app", method: "DELETE", path: "/api/v1/apps/nope", wantStatus: 404, wantError: `app "nope"`},
		{name: "link unknown app", method: "PUT", path: "/api/v1/apps/nope/links/mnist", wantStatus: 404, wantError: `app "nope"`},
		{name: "link unknown model", method: "PUT", path: "/api/v1/apps/digits/links/nope", wantStatus: 404, wantError: `model "nope"`},
		{name: "unknown model", method: "GET", path: "/api/v1/models/nope", wantStatus: 404, wantError: `model "nope"`},
		{name: "current of unknown version", method: "PUT", path: "/api/v1/models/mnist/current", body: `{"version": "9"}`, wantStatus: 404, wantError: `version "9"`},
		{name: "scale unknown version", method: "PUT", path: "/api/v1/models/mnist/versions/9/replicas", body: `{"replicas": 2}`, wantStatus: 404, wantError: `version "9"`},
		{name: "scale unknown model", method: "PUT", path: "/api/v1/models/nope/versions/1/replicas", body: `{"replicas": 2}`, wantStatus: 404, wantError: `model "nope"`},
		{name: "delete unknown version", method: "DELETE", path: "/api/v1/models/mnist/versions/9", wantStatus: 404, wantError: `version "9"`},
		{name: "unknown endpoint", method: "GET", path: "/api/v1/nothing", wantStatus: 404, wantError: "no endpoint GET /api/v1/nothing"},
		{name: "method not allowed", method: "POST", path: "/api/v1/models", wantStatus: 405, wantError: "allowed: GET",
			wantHeader: map[string]string{"Allow": "GET"}},
		{name: "method not allowed on an app", method: "POST", path: "/api/v1/apps/digits", wantStatus: 405,
			wantHeader: map[string]string{"Allow": "GET, PUT, DELETE"}},

		// 409.
		{name: "create existing app", method: "POST", path: "/api/v1/apps", body: `{"name": "digits", "input_type": "float32", "slo_ms": 5}`,
			wantStatus: 409, wantError: `app "digits": already exists`},
		{name: "link across input types", method: "PUT", path: "/api/v1/apps/spam/links/mnist", wantStatus: 409, wantError: `takes input_type "string"`},
		{name: "change input type of a linked app", method: "PUT", path: "/api/v1/apps/digits", body: `{"input_type": "string", "slo_ms": 5}`,
			wantStatus: 409, wantError: "unlink it first"},
		{name: "delete current version of a linked model", method: "DELETE", path: "/api/v1/models/mnist/versions/1", wantStatus: 409,
			wantError: "current version"},
		{name: "register an existing version with another spec", method: "POST", path: "/api/v1/models/mnist/versions",
			body: `{"version": "1", "input_type": "float32", "runtime": {"kind": "process", "command": ["/bin/other"]}}`, wantStatus: 409, wantError: "versions are immutable"},
		{name: "register a version of another input type", method: "POST", path: "/api/v1/models/mnist/versions",
			body: `{"version": "9", "input_type": "int32", "runtime": {"kind": "process", "command": ["x"]}}`, wantStatus: 409, wantError: "one input type"},

		// 413.
		{name: "body over the limit", method: "POST", path: "/api/v1/apps",
			body:       `{"name": "big", "input_type": "bytes", "slo_ms": 1, "default_output": "` + strings.Repeat("x", maxBodyBytes) + `"}`,
			wantStatus: 413, wantError: "larger than 1048576 bytes",
			checkState: func(t *testing.T, snap *state.Snapshot) {
				if _, ok := snap.App("big"); ok {
					t.Error("app created from a body over the limit")
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store := state.NewStore(nil, state.Options{})
			if !c.seedDisabled {
				seed(t, store)
			}
			opts := Options{Token: testToken, MaxReplicas: 32}
			if c.token != nil {
				opts.Token = *c.token
			}
			if c.purge != nil {
				opts.Purge = c.purge.purge
			}
			srv := startAPI(t, store, opts)
			before := store.Snapshot().Revision()

			a := call(t, srv, c.method, c.path, c.auth, c.body)
			if a.status != c.wantStatus {
				t.Fatalf("%s %s: status %d; want %d; body: %s", c.method, c.path, a.status, c.wantStatus, a.body)
			}
			if a.status >= 400 {
				if msg := a.errorMessage(t); !strings.Contains(msg, c.wantError) {
					t.Errorf("error %q; want it to contain %q", msg, c.wantError)
				}
				if a.status < 500 && a.status != 413 && store.Snapshot().Revision() != before {
					t.Errorf("a %d answer changed the state", a.status)
				}
			}
			if a.status == 204 && len(a.body) != 0 {
				t.Errorf("204 with a body: %s", a.body)
			}
			for k, v := range c.wantHeader {
				if got := a.header.Get(k); !strings.Contains(got, v) {
					t.Errorf("header %s: %q; want it to contain %q", k, got, v)
				}
			}
			if c.check != nil {
				c.check(t, a)
			}
			if c.checkState != nil {
				c.checkState(t, store.Snapshot())
			}
			if c.checkPurge != nil {
				c.purge.mu.Lock()
				calls := c.purge.calls
				c.purge.mu.Unlock()
				if !slices.Equal(calls, c.checkPurge) {
					t.Errorf("purge calls %q; want %q", calls, c.checkPurge)
				}
			}
		})
	}
}

func equalApps(a, b AppView) bool {
	return reflect.DeepEqual(a.App, b.App) && slices.Equal(a.Models, b.Models)
}

// TestAnswerShowsTheChange checks that every change's answer shows the
// state right after it: a Store reads its own writes.
func TestAnswerShowsTheChange(t *testing.T) {
	store := state.NewStore(nil, state.Options{})
	seed(t, store)
	srv := startAPI(t, store, Options{Token: testToken})
	steps := []struct {
		method, path, body string
		want               func(a answer) bool
	}{
		{"PUT", "/api/v1/apps/spam", `{"input_type": "string", "slo_ms": 7}`, func(a answer) bool { return strings.Contains(string(a.body), `"slo_ms": 7`) }},
		{"PUT", "/api/v1/apps/spam/links/echo", "", func(a answer) bool { return strings.Contains(string(a.body), `"echo"`) }},
		{"PUT", "/api/v1/models/mnist/current", `{"version": "2"}`, func(a answer) bool { return strings.Contains(string(a.body), `"current_version": "2"`) }},
		{"PUT", "/api/v1/models/mnist/versions/2/replicas", `{"replicas": 4}`, func(a answer) bool { return strings.Contains(string(a.body), `"replicas": 4`) }},
	}
	for _, s := range steps {
		a := call(t, srv, s.method, s.path, "", s.body)
		if a.status != 200 || !s.want(a) {
			t.Errorf("%s %s: %d %s", s.method, s.path, a.status, a.body)
		}
	}
}

// TestStatusOf checks the one error mapping against the state's typed
// errors, wrapped as the Store wraps them.
func TestStatusOf(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{wrap(state.ErrNotFound), 404},
		{wrap(state.ErrConflict), 409},
		{wrap(state.ErrInvalid), 400},
		{wrap(state.ErrUnavailable), 503},
		{wrap(context.DeadlineExceeded), 503},
		{wrap(context.Canceled), statusClientClosed},
		{errors.New("boom"), 500},
		{badRequest("x"), 400},
		{wrap(&http.MaxBytesError{Limit: 1}), 413},
	}
	for _, c := range cases {
		if got := statusOf(c.err); got != c.want {
			t.Errorf("statusOf(%v) = %d; want %d", c.err, got, c.want)
		}
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }

// sameSpec reports whether a and b are the same version spec, comparing
// their JSON forms, in which a nil and an empty list are the same.
func sameSpec(a, b state.ModelVersion) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}
