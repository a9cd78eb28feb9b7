package admin

import (
	"context"
	"fmt"
	"strings"
	"testing"

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
