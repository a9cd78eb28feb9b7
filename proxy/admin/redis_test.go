package admin

import (
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// startRedisStore starts a Store over the Redis at addr, as one proxy
// would, closed with its client when the test ends. Its poll interval is an
// hour, so that a change seen within a test came by notification.
func startRedisStore(t *testing.T, addr string) *state.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	s := state.NewStore(state.NewRedis(c, state.RedisOptions{Prefix: "admintest:", Timeout: 500 * time.Millisecond}), state.Options{PollInterval: time.Hour})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestRedisChangeReachesAnotherProxy changes the state through one proxy's
// admin API and polls another's until it shows the change: two proxies
// sharing a Redis converge by the change notification, not by the hourly
// poll.
func TestRedisChangeReachesAnotherProxy(t *testing.T) {
	addr := testutil.StartRedis(t)
	a := startAPI(t, startRedisStore(t, addr), Options{Token: testToken})
	b := startAPI(t, startRedisStore(t, addr), Options{Token: testToken})

	changes := []struct {
		name, method, path, body string
		status                   int
		visible                  func(t *testing.T) bool // polled on proxy b
	}{
		{"create app", "POST", "/api/v1/apps", `{"name": "digits", "input_type": "float32", "slo_ms": 50}`, 201,
			func(t *testing.T) bool { return call(t, b, "GET", "/api/v1/apps/digits", "", "").status == 200 }},
		{"register version", "POST", "/api/v1/models/mnist/versions", `{"version": "1", "input_type": "float32", "runtime": {"kind": "external", "addresses": ["127.0.0.1:7001"]}}`, 201,
			func(t *testing.T) bool { return call(t, b, "GET", "/api/v1/models/mnist", "", "").status == 200 }},
		{"scale", "PUT", "/api/v1/models/mnist/versions/1/replicas", `{"replicas": 5}`, 200,
			func(t *testing.T) bool {
				var m ModelView
				ans := call(t, b, "GET", "/api/v1/models/mnist", "", "")
				ans.decodeInto(t, &m)
				return len(m.Versions) == 1 && m.Versions[0].Replicas == 5
			}},
		{"delete app", "DELETE", "/api/v1/apps/digits", "", 204,
			func(t *testing.T) bool { return call(t, b, "GET", "/api/v1/apps/digits", "", "").status == 404 }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			if ans := call(t, a, c.method, c.path, "", c.body); ans.status != c.status {
				t.Fatalf("on proxy a: %d %s; want %d", ans.status, ans.body, c.status)
			}
			testutil.Eventually(t, 10*time.Second, "the change visible through proxy b", func() bool { return c.visible(t) })
		})
	}
}

// TestRedisDownIs503 stops the Redis under a Store: changes answer 503,
// with Retry-After, while reads still answer from the last state loaded.
func TestRedisDownIs503(t *testing.T) {
	rs := testutil.NewRedisServer(t)
	srv := startAPI(t, startRedisStore(t, rs.Addr), Options{Token: testToken})
	if ans := call(t, srv, "POST", "/api/v1/apps", "", `{"name": "digits", "input_type": "float32", "slo_ms": 50}`); ans.status != 201 {
		t.Fatalf("create: %d %s", ans.status, ans.body)
	}
	rs.Stop()

	ans := call(t, srv, "PUT", "/api/v1/apps/digits", "", `{"input_type": "float32", "slo_ms": 60}`)
	if ans.status != http.StatusServiceUnavailable || ans.header.Get("Retry-After") == "" {
		t.Fatalf("change with Redis down: %d, Retry-After %q; want 503 with Retry-After", ans.status, ans.header.Get("Retry-After"))
	}
	t.Logf("answer: %s", ans.errorMessage(t))
	if ans := call(t, srv, "GET", "/api/v1/apps/digits", "", ""); ans.status != 200 {
		t.Errorf("read with Redis down: %d %s; want 200 from the last state", ans.status, ans.body)
	}
}
