package admin

import (
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/state"
)

// TestFeaturesSpec sets an app's feature lookup through the API: validated
// against the app's input type and the proxy's stores, stored with the app
// for every proxy, kept by a PUT of the app, guarded against an input type
// it cannot fill, shown with its source, and removed by DELETE.
func TestFeaturesSpec(t *testing.T) {
	// No Redis of the proxy's own: a spec must name its store.
	table := features.NewTable(features.Options{})
	t.Cleanup(func() { table.Close() })
	store := state.NewStore(nil, state.Options{CheckApp: table.CheckApp})
	seed(t, store)
	srv := startAPI(t, store, Options{Token: testToken, Features: table})
	const spec = `{"key": "user:{user_id}", "fields": [{"name": "clicks", "type": "int", "default": 0}, {"name": "spend", "default": 0.5}], "timeout_ms": 2.5, "redis": "127.0.0.1:6390"}`
	bad := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"unknown app", "/api/v1/apps/nope/features", spec, 404, `app "nope"`},
		{"string app", "/api/v1/apps/spam/features", spec, 400, "input type string is not numeric"},
		{"no default under use_defaults", "/api/v1/apps/digits/features", `{"key": "u:{id}", "fields": [{"name": "a"}], "redis": "h:1"}`, 400, `features.fields[0] "a": no default`},
		{"no store", "/api/v1/apps/digits/features", `{"key": "u:{id}", "fields": [{"name": "a", "default": 0}]}`, 400, "set features.redis"},
		{"misspelt field", "/api/v1/apps/digits/features", `{"key": "u:{id}", "feilds": []}`, 400, `unknown field "feilds"`},
		{"negative timeout", "/api/v1/apps/digits/features", `{"key": "u:{id}", "fields": [{"name": "a", "default": 0}], "timeout_ms": -1, "redis": "h:1"}`, 400, "timeout_ms -1"},
		{"not JSON", "/api/v1/apps/digits/features", `{"key": `, 400, "request body"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			a := call(t, srv, "PUT", tt.path, "", tt.body)
			if a.status != tt.status || !strings.Contains(a.errorMessage(t), tt.want) {
				t.Fatalf("got %d %s; want %d with %q", a.status, a.body, tt.status, tt.want)
			}
		})
	}
	if a, _ := store.Snapshot().App("digits"); a.Features != nil {
		t.Fatalf("bad specs changed the app: %+v", a)
	}
	if a := call(t, srv, "GET", "/api/v1/apps/digits/features", "", ""); a.status != 404 || !strings.Contains(a.errorMessage(t), "looks no features up") {
		t.Errorf("GET before PUT: %d %s", a.status, a.body)
	}

	a := call(t, srv, "PUT", "/api/v1/apps/digits/features", "", spec)
	var view AppView
	a.decodeInto(t, &view)
	var set features.Spec
	if a.status != 200 || set.UnmarshalJSON(view.Features) != nil || set.Timeout.Microseconds() != 2500 || set.Redis != "127.0.0.1:6390" {
		t.Fatalf("PUT features: %d %s", a.status, a.body)
	}
	a = call(t, srv, "GET", "/api/v1/apps/digits/features", "", "")
	var fv FeaturesView
	a.decodeInto(t, &fv)
	if a.status != 200 || fv.Source != "admin" || fv.Spec.Key != "user:{user_id}" || len(fv.Spec.Fields) != 2 || fv.Spec.Timeout.Microseconds() != 2500 {
		t.Fatalf("GET features: %d %s", a.status, a.body)
	}
	stored, _ := store.Snapshot().App("digits")
	if a := call(t, srv, "PUT", "/api/v1/apps/digits", "", `{"input_type": "float32", "slo_ms": 40}`); a.status != 200 {
		t.Errorf("PUT app: %d %s", a.status, a.body)
	}
	if kept, _ := store.Snapshot().App("digits"); string(kept.Features) != string(stored.Features) {
		t.Errorf("after PUT app: %+v; want the spec kept", kept)
	}
	// digits is linked to nothing of another type, so only the spec
	// stands in the way of int32: a float field cannot fill it.
	must(t, store.Unlink(t.Context(), "digits", "mnist"))
	if a := call(t, srv, "PUT", "/api/v1/apps/digits", "", `{"input_type": "int32", "slo_ms": 40}`); a.status != 409 || !strings.Contains(a.errorMessage(t), "the features spec set through the admin API does not fit its input") {
		t.Errorf("PUT app as int32: %d %s", a.status, a.body)
	}
	a = call(t, srv, "DELETE", "/api/v1/apps/digits/features", "", "")
	view = AppView{}
	a.decodeInto(t, &view)
	if a.status != 200 || view.Features != nil {
		t.Errorf("DELETE features: %d %s", a.status, a.body)
	}
	if got, _ := store.Snapshot().App("digits"); got.Features != nil {
		t.Errorf("after DELETE: %+v", got)
	}
	// The file's spec, with no stored one to take its place: an app change
	// it cannot fill is refused as well.
	fileSpec := features.Spec{Key: "user:{id}", Fields: []features.Field{{Name: "a", Default: new(0.0)}, {Name: "b", Default: new(0.0)}}, Input: "user", Redis: "h:1"}
	must(t, table.Set(map[string]features.Spec{"digits": fileSpec, "fresh": fileSpec}))
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"PUT", "/api/v1/apps/digits", `{"input_type": "float32", "slo_ms": 40, "inputs": [{"name": "dense", "size": 4}, {"name": "user", "size": 2}]}`, 200},
		{"PUT", "/api/v1/apps/digits", `{"input_type": "float32", "slo_ms": 40, "inputs": [{"name": "user", "size": 3}]}`, 409},
		{"PUT", "/api/v1/apps/digits", `{"input_type": "float32", "slo_ms": 40}`, 409},
		{"POST", "/api/v1/apps", `{"name": "fresh", "input_type": "float32", "slo_ms": 40}`, 409},
		{"POST", "/api/v1/apps", `{"name": "fresh", "input_type": "float32", "slo_ms": 40, "inputs": [{"name": "user", "size": 2}]}`, 201},
	} {
		a := call(t, srv, tc.method, tc.path, "", tc.body)
		if a.status != tc.status || tc.status == 409 && !strings.Contains(a.errorMessage(t), "the configuration file's features spec does not fit its input") {
			t.Errorf("%s %s %s: %d %s; want %d", tc.method, tc.path, tc.body, a.status, a.body, tc.status)
		}
	}
	if got, _ := store.Snapshot().App("digits"); len(got.Inputs) != 2 {
		t.Errorf("refused PUTs changed the app: %+v", got)
	}
	// With a spec set through the API in its place, the file's need not
	// fit; removing that spec puts the file's back, so it must.
	dense := `{"key": "u:{id}", "fields": [{"name": "a", "default": 0}, {"name": "b", "default": 0}, {"name": "c", "default": 0}, {"name": "d", "default": 0}], "input": "dense", "redis": "h:1"}`
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"PUT", "/api/v1/apps/digits/features", dense, 200, ""},
		{"PUT", "/api/v1/apps/digits", `{"input_type": "float32", "slo_ms": 40, "inputs": [{"name": "dense", "size": 4}]}`, 200, ""},
		{"DELETE", "/api/v1/apps/digits/features", "", 409, "the configuration file's features spec does not fit its input"},
		{"PUT", "/api/v1/apps/digits", `{"input_type": "float32", "slo_ms": 40, "inputs": [{"name": "a b", "size": 4}]}`, 400, `inputs[0]: name "a b"`},
	} {
		a := call(t, srv, tc.method, tc.path, "", tc.body)
		if a.status != tc.status || tc.want != "" && !strings.Contains(a.errorMessage(t), tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d %s", tc.method, tc.path, tc.body, a.status, a.body, tc.status, tc.want)
		}
	}
	if got, _ := store.Snapshot().App("digits"); got.Features == nil {
		t.Error("a refused DELETE removed the stored spec")
	}
	must(t, table.Set(nil))
	must(t, store.UpdateApp(t.Context(), "digits", func(a *state.App, _ []string) error { a.Features = nil; return nil }))
	without := startAPI(t, store, Options{Token: testToken})
	if a := call(t, without, "PUT", "/api/v1/apps/digits/features", "", spec); a.status != 501 {
		t.Errorf("without features: %d %s", a.status, a.body)
	}
}

// TestFeaturesSpecUnreadable: a stored spec that does not parse (written
// by another writer of the state) is a conflict that says how to mend it.
func TestFeaturesSpecUnreadable(t *testing.T) {
	table := features.NewTable(features.Options{})
	t.Cleanup(func() { table.Close() })
	store := state.NewStore(nil, state.Options{CheckApp: table.CheckApp})
	seed(t, store)
	must(t, store.UpdateApp(t.Context(), "digits", func(a *state.App, _ []string) error {
		a.Features = []byte(`{"key": "u:{id}", "feilds": []}`)
		return nil
	}))
	srv := startAPI(t, store, Options{Token: testToken, Features: table})
	a := call(t, srv, "GET", "/api/v1/apps/digits/features", "", "")
	if msg := a.errorMessage(t); a.status != 409 || !strings.Contains(msg, "does not parse") || !strings.Contains(msg, "PUT /api/v1/apps/digits/features") {
		t.Fatalf("GET features: %d %s; want 409 saying how to mend it", a.status, a.body)
	}
}
