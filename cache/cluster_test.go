package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	sltest "github.com/sloproxy/sloproxy/internal/testutil"
)

// TestCluster runs the cache on a three-master Redis Cluster: its entries
// spread over the three masters, a batch's lookups in Redis (one MGET on a
// single server) find entries whatever master holds them, and a purge
// removes a model's entries from every master, keeping the others'.
func TestCluster(t *testing.T) {
	const n = 300
	cluster := sltest.StartRedisCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	a, b := startOn(t, client, "cl:", time.Second), startOn(t, client, "cl:", time.Second)
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = NewKey(fmt.Sprint("m", i%2), "1", "string", fmt.Appendf(nil, "input %d", i))
		a.Put(keys[i], fmt.Appendf(nil, "out %d", i), time.Minute)
	}
	ctx := context.Background()
	perMaster := func() map[string]int64 {
		var mu sync.Mutex
		out := map[string]int64{}
		err := client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			size, err := m.DBSize(ctx).Result()
			mu.Lock()
			out[m.Options().Addr] = size
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	total := func(m map[string]int64) (sum int64) {
		for _, v := range m {
			sum += v
		}
		return sum
	}
	sltest.Eventually(t, 10*time.Second, "every fill in Redis", func() bool { return total(perMaster()) == n })
	counts := perMaster()
	t.Logf("entries by master: %v", counts)
	for _, addr := range cluster.Addrs() {
		if counts[addr] == 0 {
			t.Errorf("master %s holds none of the %d entries: %v", addr, n, counts)
		}
	}

	outs, hits := make([][]byte, n), make([]Hit, n)
	if misses := b.Get(keys, outs, hits); misses != n {
		t.Fatalf("B's L1 missed %d of %d, want all", misses, n)
	}
	b.Fetch(ctx, keys, time.Minute, outs, hits)
	for i := range keys {
		if hits[i] != L2 || string(outs[i]) != fmt.Sprint("out ", i) {
			t.Fatalf("B's lookup %d in Redis: %q %v, want out %d from L2", i, outs[i], hits[i], i)
		}
	}

	if err := a.Purge(ctx, "m0"); err != nil {
		t.Fatal(err)
	}
	if left := total(perMaster()); left != n/2 {
		t.Errorf("%d entries in Redis after purging m0, want m1's %d", left, n/2)
	}
	sltest.Eventually(t, 5*time.Second, "m0 purged from B's L1 too", func() bool { _, hit := get(b, keys[0]); return hit == Miss })
	if out, hit := get(b, keys[1]); hit == Miss || string(out) != "out 1" {
		t.Errorf("m1's entry on B after purging m0: %q %v, want it kept", out, hit)
	}
}

// TestClusterMasterDown: with one master of a Cluster down, a batch's
// lookup in Redis still hits the entries the others hold, and the failure
// is counted.
func TestClusterMasterDown(t *testing.T) {
	const n = 60
	cluster := sltest.StartRedisCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), MaxRedirects: -1,
		DialTimeout: 100 * time.Millisecond, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	a, b := startOn(t, client, "down:", 2*time.Second), startOn(t, client, "down:", 2*time.Second)
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = NewKey("m", "1", "string", fmt.Appendf(nil, "input %d", i))
		a.Put(keys[i], fmt.Appendf(nil, "out %d", i), time.Minute)
	}
	ctx := context.Background()
	sltest.Eventually(t, 10*time.Second, "every fill in Redis", func() bool {
		for _, k := range keys {
			if client.Exists(ctx, a.redisKey(k)).Val() != 1 {
				return false
			}
		}
		return true
	})
	down := cluster.Masters[0]
	var onDown int
	for _, k := range keys {
		if cluster.MasterOf(t, b.redisKey(k)) == down.Addr {
			onDown++
		}
	}
	down.Stop()
	outs, hits := make([][]byte, n), make([]Hit, n)
	b.Get(keys, outs, hits)
	b.Fetch(ctx, keys, time.Minute, outs, hits)
	var found int
	for i := range keys {
		if hits[i] == L2 {
			found++
			if string(outs[i]) != fmt.Sprint("out ", i) {
				t.Fatalf("lookup %d: %q, want out %d", i, outs[i], i)
			}
		}
	}
	if onDown == 0 || onDown == n || found != n-onDown {
		t.Fatalf("%d of %d found in Redis with %d on the master down; want the others' %d", found, n, onDown, n-onDown)
	}
	if got := testutil.ToFloat64(b.m.redisErrors.WithLabelValues("mget")); got != 1 {
		t.Errorf("sloproxy_cache_redis_errors_total{op=\"mget\"} %v, want 1", got)
	}
}

// startOn starts a cache on client under prefix, closed when the test
// ends.
func startOn(t *testing.T, client redis.UniversalClient, prefix string, timeout time.Duration) *Cache {
	t.Helper()
	c, err := New(Options{Redis: client, Prefix: prefix, Timeout: timeout, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
