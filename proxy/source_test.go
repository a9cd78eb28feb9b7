package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestBypassCache(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{"no-cache"}, true},
		{[]string{"No-Cache"}, true},
		{[]string{"max-age=0, no-cache"}, true},
		{[]string{"max-age=0", "no-cache"}, true},
		{[]string{`no-cache="set-cookie"`}, true},
		{[]string{"no-store"}, false},
		{[]string{"max-age=60"}, false},
		{[]string{"no-cachex"}, false},
	} {
		r, _ := http.NewRequest(http.MethodPost, "/", nil)
		for _, v := range tc.values {
			r.Header.Add("Cache-Control", v)
		}
		if got := bypassCache(r); got != tc.want {
			t.Errorf("Cache-Control %q: bypass %v, want %v", tc.values, got, tc.want)
		}
	}
}

// TestCacheControlNoCache proves that a query with Cache-Control: no-cache
// reaches the model although its answer is cached, and that Sloproxy-Source
// says where each answer came from.
func TestCacheControlNoCache(t *testing.T) {
	model := startCountingModel(t, 0)
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Options{Registerer: reg})
	must(t, err)
	must(t, c.Start(t.Context()))
	t.Cleanup(func() { c.Close() })
	e := newEnvWith(t, nil, c, reg)
	e.addModel(state.App{Name: "upper", InputType: state.InputString, SLO: 2 * time.Second, DefaultOutput: `"none"`},
		"upper", model.addr)

	for _, tc := range []struct {
		name, body, cacheControl string
		source                   string
		computed                 int64 // inputs the model computes for it
	}{
		{"a first query reaches the model", `{"input": "a"}`, "", "model", 1},
		{"the same query is answered by the cache", `{"input": "a"}`, "", "cache", 0},
		{"no-cache reaches the model", `{"input": "a"}`, "no-cache", "model", 1},
		{"a batch says where each answer came from", `{"input_batch": ["a", "b"]}`, "", "cache, model", 1},
		{"no-cache on a batch", `{"input_batch": ["a", "b"]}`, "max-age=0, no-cache", "model, model", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := model.inputs.Load()
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/apps/upper/predict", strings.NewReader(tc.body))
			must(t, err)
			if tc.cacheControl != "" {
				req.Header.Set("Cache-Control", tc.cacheControl)
			}
			resp, err := http.DefaultClient.Do(req)
			must(t, err)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Sloproxy-Source"); got != tc.source {
				t.Errorf("Sloproxy-Source %q, want %q", got, tc.source)
			}
			if got := model.inputs.Load() - before; got != tc.computed {
				t.Errorf("the model computed %d inputs, want %d", got, tc.computed)
			}
		})
	}

	t.Run("a default output says so", func(t *testing.T) {
		must(t, e.store.PutApp(t.Context(), state.App{Name: "lonely", InputType: state.InputString, SLO: time.Second, DefaultOutput: `"none"`}))
		// The proxy follows the store in the background: until the app
		// reaches it, the app is unknown (404).
		var source string
		testutil.Eventually(t, 10*time.Second, "the new app answering 200", func() bool {
			resp, err := http.Post(e.srv.URL+"/apps/lonely/predict", "application/json", strings.NewReader(`{"input": "a"}`))
			must(t, err)
			resp.Body.Close()
			source = resp.Header.Get("Sloproxy-Source")
			return resp.StatusCode == http.StatusOK
		})
		if source != "default" {
			t.Errorf("Sloproxy-Source %q, want default", source)
		}
	})
}
