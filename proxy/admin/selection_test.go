package admin

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

func TestSelectionStatus(t *testing.T) {
	store := state.NewStore(nil, state.Options{})
	seed(t, store)
	status := func(_ context.Context, app string) (selection.Status, error) {
		if app != "mnist" {
			return selection.Status{}, fmt.Errorf("%w: no app named %q", state.ErrNotFound, app)
		}
		return selection.Status{Policy: "weighted", Shares: map[string]float64{"mnist": 1, "mnist:2": 0}, RolledBack: []string{"mnist:2"}}, nil
	}
	srv := startAPI(t, store, Options{Token: testToken, Selection: status})
	a := call(t, srv, "GET", "/api/v1/apps/mnist/selection", "", "")
	var got selection.Status
	a.decodeInto(t, &got)
	if a.status != 200 || got.Policy != "weighted" || len(got.RolledBack) != 1 || got.Shares["mnist:2"] != 0 {
		t.Errorf("GET selection: %d %s", a.status, a.body)
	}
	if a := call(t, srv, "GET", "/api/v1/apps/nope/selection", "", ""); a.status != 404 || !strings.Contains(a.errorMessage(t), "nope") {
		t.Errorf("unknown app: %d %s", a.status, a.body)
	}
	without := startAPI(t, store, Options{Token: testToken})
	if a := call(t, without, "GET", "/api/v1/apps/mnist/selection", "", ""); a.status != 501 {
		t.Errorf("without selection: %d %s", a.status, a.body)
	}
}

func TestUnknownPolicyIsRefused(t *testing.T) {
	store := state.NewStore(nil, state.Options{})
	srv := startAPI(t, store, Options{Token: testToken})
	for _, req := range []struct{ method, path string }{{"POST", "/api/v1/apps"}, {"PUT", "/api/v1/apps/a"}} {
		a := call(t, srv, req.method, req.path, "", `{"name": "a", "input_type": "string", "slo_ms": 5, "policy": "ucb"}`)
		if a.status != 400 || !strings.Contains(a.errorMessage(t), `policy "ucb"`) {
			t.Errorf("%s %s with policy ucb: %d %s", req.method, req.path, a.status, a.body)
		}
	}
	if _, ok := store.Snapshot().App("a"); ok {
		t.Error("the app was created")
	}
	if a := call(t, srv, "PUT", "/api/v1/apps/a", "", `{"input_type": "string", "slo_ms": 5, "policy": "exp3"}`); a.status != 201 {
		t.Errorf("policy exp3: %d %s", a.status, a.body)
	}
}

// TestSelectionSpec sets an app's selection spec through the API: it is
// stored with the app for every proxy, validated as a whole against the
// app's links, kept by a PUT of the app, and removed by DELETE.
func TestSelectionSpec(t *testing.T) {
	store := state.NewStore(nil, state.Options{})
	seed(t, store)
	srv := startAPI(t, store, Options{Token: testToken})
	const canary = `{"policy": "weighted", "shares": {"mnist": 9, "mnist:2": 1}, "guard": {"canary": "mnist:2", "min_attainment": 0.95}}`
	bad := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"unknown app", "/api/v1/apps/nope/selection", canary, 404, `app "nope"`},
		{"unlinked share", "/api/v1/apps/spam/selection", canary, 400, `shares["mnist"]: model not in the app's models (link it first)`},
		{"invalid spec", "/api/v1/apps/digits/selection", `{"policy": "weighted"}`, 400, "weighted needs shares"},
		{"misspelt field", "/api/v1/apps/digits/selection", `{"policy": "exp3", "gama": 0.2}`, 400, `unknown field "gama"`},
		{"not JSON", "/api/v1/apps/digits/selection", `{"policy": `, 400, "request body"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			a := call(t, srv, "PUT", tt.path, "", tt.body)
			if a.status != tt.status || !strings.Contains(a.errorMessage(t), tt.want) {
				t.Fatalf("got %d %s; want %d with %q", a.status, a.body, tt.status, tt.want)
			}
		})
	}
	if a, _ := store.Snapshot().App("digits"); a.Selection != nil || a.Policy != "" {
		t.Fatalf("bad specs changed the app: %+v", a)
	}

	a := call(t, srv, "PUT", "/api/v1/apps/digits/selection", "", canary)
	var view AppView
	a.decodeInto(t, &view)
	if s, err := selection.ParseSpec(view.Selection); a.status != 200 || view.Policy != "" || err != nil || s.Shares["mnist:2"] != 1 {
		t.Fatalf("PUT selection: %d %s", a.status, a.body)
	}
	stored, _ := store.Snapshot().App("digits")
	spec, err := selection.ParseSpec(stored.Selection)
	if err != nil || spec.Guard.Canary != "mnist:2" || spec.Guard.MinAttainment != 0.95 || stored.Policy != "" {
		t.Fatalf("stored %+v: %+v, %v", stored, spec, err)
	}
	if a := call(t, srv, "PUT", "/api/v1/apps/digits", "", `{"input_type": "float32", "slo_ms": 40, "policy": "exp3"}`); a.status != 200 {
		t.Errorf("PUT app: %d %s", a.status, a.body)
	}
	if kept, _ := store.Snapshot().App("digits"); kept.SLO != 40*time.Millisecond || kept.Policy != "exp3" || string(kept.Selection) != string(stored.Selection) {
		t.Errorf("after PUT app: %+v; want the new SLO and policy, and the spec kept", kept)
	}
	a = call(t, srv, "DELETE", "/api/v1/apps/digits/selection", "", "")
	view = AppView{}
	a.decodeInto(t, &view)
	if a.status != 200 || view.Selection != nil || view.Policy != "exp3" {
		t.Errorf("DELETE selection: %d %s", a.status, a.body)
	}
	if got, _ := store.Snapshot().App("digits"); got.Selection != nil {
		t.Errorf("after DELETE: %+v", got)
	}
}
