package state_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backendKind makes Backends of one kind. open returns a function that
// makes Backends over one fresh, empty storage: each call is another
// proxy's view of the same state.
type backendKind struct {
	name string
	open func(t *testing.T) func() state.Backend
}

// backendKinds returns the memory kind, the bolt kind over a file in a
// fresh directory, and a Redis kind over one real redis-server, which every
// open call shares under its own key prefix.
func backendKinds(t *testing.T) []backendKind {
	t.Helper()
	addr := testutil.StartRedis(t)
	return []backendKind{
		{"memory", func(t *testing.T) func() state.Backend {
			m := state.NewMemory()
			return func() state.Backend { return m }
		}},
		{"bolt", func(t *testing.T) func() state.Backend {
			b := newBoltBackend(t, testutil.OpenBolt(t, filepath.Join(t.TempDir(), "state.db")))
			return func() state.Backend { return b }
		}},
		{"redis", func(t *testing.T) func() state.Backend {
			prefix := fmt.Sprintf("test%d:", prefixes.Add(1))
			return func() state.Backend { return newRedisBackend(t, addr, prefix) }
		}},
	}
}

var prefixes atomic.Int64

// newRedisBackend returns a Redis backend with its own client, closed when
// the test ends. Its updates may take 10 s with their retries rather than
// the default 2 s: with -race and the other packages' tests on two cores,
// ten writers contending for one key sometimes needed more than 2 s, and
// these tests check what the writers commit, not how fast.
func newRedisBackend(t *testing.T, addr, prefix string) *state.Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return state.NewRedis(c, state.RedisOptions{Prefix: prefix, Timeout: 10 * time.Second})
}

// newBoltBackend returns a Bolt backend over db.
func newBoltBackend(t *testing.T, db *bolt.DB) *state.Bolt {
	t.Helper()
	b, err := state.NewBolt(db)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startStore starts a Store over b, closed when the test ends.
func startStore(t *testing.T, b state.Backend, opts state.Options) *state.Store {
	t.Helper()
	s := state.NewStore(b, opts)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitFor waits until cond holds for s's snapshot, failing the test after
// 5 s, and returns how long it took.
func waitFor(t *testing.T, s *state.Store, what string, cond func(*state.Snapshot) bool) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		snap := s.Snapshot()
		if cond(snap) {
			return time.Since(start)
		}
		select {
		case <-snap.Changed():
		case <-timeout.C:
			t.Fatalf("%s: not within 5s (at revision %d)", what, s.Snapshot().Revision())
		}
	}
}

func app(name string, it state.InputType) state.App {
	return state.App{Name: name, InputType: it, SLO: 20 * time.Millisecond, DefaultOutput: "0"}
}

func version(model, v string, it state.InputType) state.ModelVersion {
	return state.ModelVersion{
		Model: model, Version: v, InputType: it, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/bin/model", "--version", v}},
	}
}

// must fails the test if err is not nil.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
