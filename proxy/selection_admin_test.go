package proxy

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// TestCanaryThroughTheAdminAPI sets an app's weighted shares through the
// real admin API: the proxy splits the traffic by them at once, shows
// where its spec comes from, and goes back to the configuration's when the
// spec is deleted.
func TestCanaryThroughTheAdminAPI(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "echo", InputType: state.InputString, SLO: 2 * time.Second}, "a", noop(t, "string"))
	e.addLinked("echo", "b", noop(t, "string"), state.InputString)
	e.waitHealthy("b", "1")
	e.proxy.ApplySelection(map[string]selection.Spec{"echo": {Policy: selection.NameSingle}})
	const token = "t0ken"
	api := httptest.NewServer(admin.NewHandler(e.store, admin.Options{Token: token, Selection: e.proxy.SelectionStatus}))
	t.Cleanup(api.Close)
	client := &admin.Client{BaseURL: api.URL, Token: token}
	ctx := context.Background()
	count := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			status, m := e.post("/apps/echo/predict", `{"input": "1"}`)
			if status != 200 || m["default"] != false {
				t.Fatalf("predict: %d %v", status, m)
			}
			got[armOf(m)]++
		}
		return got
	}
	if got := count(50); got["a"] != 50 {
		t.Fatalf("single, from the configuration: %v; want every query to a", got)
	}
	if _, err := client.SetSelection(ctx, "echo", []byte(`{"policy": "weighted", "shares": {"a": 3, "b": 1}, "seed": 9}`)); err != nil {
		t.Fatalf("PUT selection: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the proxy sees the spec", func() bool {
		st, err := e.proxy.SelectionStatus(ctx, "echo")
		return err == nil && st.Source == selection.FromAdmin
	})
	got := count(400)
	t.Logf("weighted 3:1 through the admin API, 400 queries: %v", got)
	// 100 expected for b; 4 standard deviations of a binomial(400, 1/4) is 35.
	if got["b"] < 65 || got["b"] > 135 || got["a"]+got["b"] != 400 {
		t.Errorf("shares 3:1 gave %v", got)
	}
	if _, err := client.ClearSelection(ctx, "echo"); err != nil {
		t.Fatalf("DELETE selection: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the proxy drops the spec", func() bool {
		st, err := e.proxy.SelectionStatus(ctx, "echo")
		return err == nil && st.Source == selection.FromConfig
	})
	if got := count(50); got["a"] != 50 {
		t.Errorf("single again: %v", got)
	}
}
