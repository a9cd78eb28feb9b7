package state_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// TestRedisRestart stops Redis under two running stores: mutations fail
// with a clear error, the snapshots keep serving, and once Redis is back
// (empty: it has no persistence) the stores write their state back and
// follow each other's changes again, without being recreated.
func TestRedisRestart(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	ctx := t.Context()
	a := startStore(t, newRedisBackend(t, srv.Addr, "r:"), state.Options{PollInterval: time.Hour})
	b := startStore(t, newRedisBackend(t, srv.Addr, "r:"), state.Options{PollInterval: time.Hour})
	must(t, a.PutApp(ctx, app("before", state.InputString)))
	waitFor(t, b, "app made before the restart", func(s *state.Snapshot) bool { _, ok := s.App("before"); return ok })

	srv.Stop()
	err := a.PutApp(ctx, app("during", state.InputString))
	if !errors.Is(err, state.ErrUnavailable) {
		t.Fatalf("PutApp while Redis is down: error = %v; want ErrUnavailable", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "redis") || !strings.Contains(msg, "r:state") {
		t.Errorf("error %q should name redis and the key", msg)
	}
	t.Logf("PutApp while Redis is down: %v", err)
	if _, ok := b.Snapshot().App("before"); !ok {
		t.Errorf("the snapshot lost its state while Redis is down")
	}

	srv.Start()
	// Without polling, only the resubscription tells the stores that Redis
	// is back; they find it empty and write their state back.
	waitFor(t, b, "state written back after the restart", func(*state.Snapshot) bool {
		d, err := newRedisBackend(t, srv.Addr, "r:").Load(ctx)
		return err == nil && d.Apps["before"].Name == "before"
	})
	must(t, a.PutApp(ctx, app("after", state.InputString)))
	took := waitFor(t, b, "change made after the restart", func(s *state.Snapshot) bool {
		_, before := s.App("before")
		_, after := s.App("after")
		return before && after
	})
	t.Logf("after the restart, a change reached the other store in %v", took)
	must(t, b.PutApp(ctx, app("back", state.InputString)))
	waitFor(t, a, "change through the other store", func(s *state.Snapshot) bool { _, ok := s.App("back"); return ok })
}

// TestRedisPoll changes the document behind the stores' backs, without an
// announcement: the poll picks it up.
func TestRedisPoll(t *testing.T) {
	addr := testutil.StartRedis(t)
	ctx := t.Context()
	s := startStore(t, newRedisBackend(t, addr, "p:"), state.Options{PollInterval: 50 * time.Millisecond})
	must(t, s.PutApp(ctx, app("a", state.InputString)))

	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	doc := map[string]any{"schema": 1, "revision": 100, "apps": map[string]any{
		"quiet": map[string]any{"name": "quiet", "input_type": "bytes", "slo_ms": 5},
	}}
	b, _ := json.Marshal(doc)
	must(t, c.Set(ctx, "p:state", b, 0).Err())
	took := waitFor(t, s, "unannounced change", func(s *state.Snapshot) bool { _, ok := s.App("quiet"); return ok })
	t.Logf("poll found the unannounced change in %v", took)
	if got := s.Snapshot().Revision(); got != 100 {
		t.Errorf("revision = %d; want 100", got)
	}
}

// TestRedisDocument checks the stored document and the announcement.
func TestRedisDocument(t *testing.T) {
	addr := testutil.StartRedis(t)
	ctx := t.Context()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	backend := state.NewRedis(c, state.RedisOptions{})
	if backend.Key() != "sloproxy:state" || backend.Channel() != "sloproxy:state:changed" {
		t.Fatalf("default key, channel = %q, %q", backend.Key(), backend.Channel())
	}
	sub := c.Subscribe(ctx, backend.Channel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}

	s := state.NewStore(backend, state.Options{}) // not started: mutations still work
	a := app("a", state.InputFloat32)
	a.SLO = 2500 * time.Microsecond
	must(t, s.PutApp(ctx, a))
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Payload != "1" {
		t.Errorf("announced %q; want the revision, 1", msg.Payload)
	}
	raw, err := c.Get(ctx, "sloproxy:state").Result()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Schema   int                        `json:"schema"`
		Revision uint64                     `json:"revision"`
		Apps     map[string]json.RawMessage `json:"apps"`
	}
	must(t, json.Unmarshal([]byte(raw), &doc))
	if doc.Schema != 1 || doc.Revision != 1 {
		t.Errorf("schema, revision = %d, %d; want 1, 1", doc.Schema, doc.Revision)
	}
	if got := string(doc.Apps["a"]); !strings.Contains(got, `"slo_ms":2.5`) {
		t.Errorf("stored app %s lacks \"slo_ms\":2.5", got)
	}
}

// TestRedisBadDocument: a store refuses a document it cannot read rather
// than overwrite it.
func TestRedisBadDocument(t *testing.T) {
	addr := testutil.StartRedis(t)
	ctx := t.Context()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	cases := []struct {
		name, doc, message string
	}{
		{"not JSON", "{", "no valid state document"},
		{"newer schema", `{"schema": 2, "revision": 7}`, "schema 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "bad" + strings.ReplaceAll(tc.name, " ", "") + ":"
			must(t, c.Set(ctx, prefix+"state", tc.doc, 0).Err())
			s := state.NewStore(state.NewRedis(c, state.RedisOptions{Prefix: prefix}), state.Options{})
			defer s.Close()
			if err := s.Start(ctx); err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("Start: error = %v; want one mentioning %q", err, tc.message)
			}
			if err := s.PutApp(ctx, app("a", state.InputBytes)); err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("PutApp: error = %v; want one mentioning %q", err, tc.message)
			}
			if got, _ := c.Get(ctx, prefix+"state").Result(); got != tc.doc {
				t.Errorf("document overwritten with %s", got)
			}
		})
	}
}

// TestStartRedisDown: a store cannot start without its state.
func TestStartRedisDown(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	srv.Stop()
	s := state.NewStore(newRedisBackend(t, srv.Addr, "down:"), state.Options{})
	start := time.Now()
	err := s.Start(t.Context())
	if !errors.Is(err, state.ErrUnavailable) {
		t.Fatalf("Start with Redis down: error = %v; want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Start took %v to fail; want about the 2s timeout at most", took)
	}
	must(t, s.Close())
}

func TestLifecycle(t *testing.T) {
	s := state.NewStore(nil, state.Options{})
	must(t, s.Close()) // before Start: nothing to stop
	must(t, s.Start(t.Context()))
	if err := s.Start(t.Context()); err == nil {
		t.Errorf("second Start succeeded")
	}
	must(t, s.Close())
	must(t, s.Close())
	// The snapshot stays readable and mutations still work after Close.
	must(t, s.PutApp(t.Context(), app("a", state.InputBytes)))
	if _, ok := s.Snapshot().App("a"); !ok {
		t.Errorf("mutation after Close not visible")
	}
}

func TestZeroSnapshot(t *testing.T) {
	var s state.Snapshot
	if _, ok := s.App("a"); ok {
		t.Error("App found in the zero snapshot")
	}
	if _, ok := s.Current("m"); ok {
		t.Error("Current found in the zero snapshot")
	}
	if s.Revision() != 0 || s.Apps() != nil || s.Models() != nil || s.ModelsOf("a") != nil || s.AppsOf("m") != nil || s.Replicas("m", "1") != nil {
		t.Error("the zero snapshot is not empty")
	}
	if !slices.Equal(s.ModelsOf("a"), nil) {
		t.Error("ModelsOf not nil")
	}
}
