package state_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// TestRedisCluster runs two stores on a three-master Redis Cluster: the
// document's transaction and its announcement work there (the document
// is one key, so no transaction spans slots), and each store follows the
// other's changes.
func TestRedisCluster(t *testing.T) {
	cluster := testutil.StartRedisCluster(t, 3)
	ctx := t.Context()
	backend := func() *state.Redis {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
		t.Cleanup(func() { _ = c.Close() })
		return state.NewRedis(c, state.RedisOptions{Prefix: "c:"})
	}
	a := startStore(t, backend(), state.Options{PollInterval: time.Hour})
	b := startStore(t, backend(), state.Options{PollInterval: time.Hour})
	must(t, a.PutApp(ctx, app("from-a", state.InputString)))
	waitFor(t, b, "A's change announced to B", func(s *state.Snapshot) bool { _, ok := s.App("from-a"); return ok })
	must(t, b.PutApp(ctx, app("from-b", state.InputString)))
	waitFor(t, a, "B's change announced to A", func(s *state.Snapshot) bool { _, ok := s.App("from-b"); return ok })
}

// TestRedisWaitReplicas: with WaitReplicas, a change returns once a
// replica holds it, and fails with ErrNotReplicated (an ErrUnavailable)
// when no replica acknowledges it in time.
func TestRedisWaitReplicas(t *testing.T) {
	ctx := t.Context()
	master := testutil.NewRedisServer(t, "--repl-diskless-sync-delay", "0")
	alone := testutil.NewRedisServer(t)
	replica := testutil.NewRedisServer(t, "--replicaof", "127.0.0.1", master.Addr[len("127.0.0.1:"):])
	on := func(addr string) *state.Redis {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		return state.NewRedis(c, state.RedisOptions{Prefix: "w:", WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})
	}
	put := func(s *state.Redis, name string) error {
		_, err := s.Update(ctx, func(d *state.Data) error {
			if d.Apps == nil {
				d.Apps = map[string]state.App{}
			}
			d.Apps[name] = app(name, state.InputString)
			return nil
		})
		return err
	}
	replicated := on(master.Addr)
	// The replica acknowledges once it has synchronised with the master.
	testutil.Eventually(t, 10*time.Second, "a change acknowledged by the replica", func() bool { return put(replicated, "first") == nil })
	must(t, put(replicated, "second"))
	d, err := on(replica.Addr).Load(ctx)
	must(t, err)
	if _, ok := d.Apps["second"]; !ok {
		t.Errorf("the replica lacks a change acknowledged as replicated: %+v", d.Apps)
	}
	err = put(on(alone.Addr), "lonely")
	if !errors.Is(err, state.ErrNotReplicated) || !errors.Is(err, state.ErrUnavailable) {
		t.Fatalf("a change on a master without replicas: %v; want ErrNotReplicated", err)
	}
	t.Logf("a change on a master without replicas: %v", err)
}
