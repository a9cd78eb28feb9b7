package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// haReadyTimeout bounds how long a Sentinel group or a Cluster may take to
// settle after its processes answer PING.
const haReadyTimeout = 20 * time.Second

// RedisSentinelGroup is a master, its replicas and the Sentinels that
// watch them, each a process on 127.0.0.1 that dies with the test.
type RedisSentinelGroup struct {
	// MasterName is the name under which the Sentinels watch the master.
	MasterName string
	// Servers are the master (Servers[0] at the start) and its replicas.
	Servers []*RedisServer
	// Sentinels watch them; a quorum of two agrees that the master is down.
	Sentinels []*RedisServer
	// DownAfter is the Sentinels' down-after-milliseconds: how long the
	// master may not answer before they start a failover.
	DownAfter time.Duration
}

// StartRedisSentinelGroup starts a master with replicas replicas and
// three Sentinels (Debian's redis-sentinel) that watch it with a quorum of
// two and the down-after time downAfter, and returns when the master has
// its replicas and each Sentinel knows them and the other Sentinels, so
// that a failover can start as soon as the master fails.
func StartRedisSentinelGroup(t testing.TB, replicas int, downAfter time.Duration) *RedisSentinelGroup {
	t.Helper()
	bin, err := findRedisBinary("redis-sentinel")
	if err != nil {
		t.Fatalf("testutil: %v; run ./scripts/test, which installs it (apt-get install redis-sentinel)", err)
	}
	g := &RedisSentinelGroup{MasterName: "sloproxy-test", DownAfter: downAfter}
	// Every server may become the master: none waits for more replicas
	// before a full synchronisation (5 s by default).
	sync := []string{"--repl-diskless-sync-delay", "0"}
	master := NewRedisServer(t, sync...)
	g.Servers = append(g.Servers, master)
	host, port := "127.0.0.1", strconv.Itoa(master.port)
	for range replicas {
		g.Servers = append(g.Servers, NewRedisServer(t, append(sync, "--replicaof", host, port)...))
	}
	deadline := time.Now().Add(haReadyTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer mc.Close()
	Eventually(t, time.Until(deadline), "the master's replicas in sync", func() bool {
		info, err := mc.Info(ctx, "replication").Result()
		return err == nil && strings.Count(info, "state=online") == replicas
	})
	for range 3 {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 2\nsentinel down-after-milliseconds %[1]s %[4]d\nsentinel failover-timeout %[1]s 10000\nsentinel parallel-syncs %[1]s 1\n",
			g.MasterName, host, port, downAfter.Milliseconds())
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatalf("testutil: %v", err)
		}
		g.Sentinels = append(g.Sentinels, startRedisProcess(t, &RedisServer{t: t, bin: bin, dir: dir, conf: conf}))
	}
	for _, s := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		Eventually(t, time.Until(deadline), "Sentinel "+s.Addr+" knowing the replicas and the other Sentinels", func() bool {
			reps, err1 := sc.Replicas(ctx, g.MasterName).Result()
			sens, err2 := sc.Sentinels(ctx, g.MasterName).Result()
			return err1 == nil && err2 == nil && len(reps) == replicas && len(sens) == len(g.Sentinels)-1
		})
		_ = sc.Close()
	}
	return g
}

// SentinelAddrs are the Sentinels' addresses.
func (g *RedisSentinelGroup) SentinelAddrs() []string {
	out := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		out[i] = s.Addr
	}
	return out
}

// Master returns the server that the first Sentinel names as the master.
func (g *RedisSentinelGroup) Master(t testing.TB) *RedisServer {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0].Addr})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, g.MasterName).Result()
	if err != nil {
		t.Fatalf("testutil: asking Sentinel %s for the master: %v", g.Sentinels[0].Addr, err)
	}
	for _, s := range g.Servers {
		if s.Addr == hp[0]+":"+hp[1] {
			return s
		}
	}
	t.Fatalf("testutil: the Sentinels name %v as the master, none of the group's servers", hp)
	return nil
}

// RedisCluster is a Redis Cluster of masters without replicas, each a
// redis-server process on 127.0.0.1 that dies with the test.
type RedisCluster struct {
	// Masters hold the 16384 slots, split evenly by redis-cli.
	Masters []*RedisServer
}

// StartRedisCluster starts masters redis-server processes in cluster mode,
// joins them with redis-cli --cluster create, and returns when every node
// reports the cluster ok.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	cli, err := findRedisBinary("redis-cli")
	if err != nil {
		t.Fatalf("testutil: %v; run ./scripts/test, which installs it (apt-get install redis-server)", err)
	}
	c := &RedisCluster{}
	for range masters {
		c.Masters = append(c.Masters, NewRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000"))
	}
	deadline := time.Now().Add(haReadyTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	out, err := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("testutil: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, m := range c.Masters {
		rc := redis.NewClient(&redis.Options{Addr: m.Addr})
		Eventually(t, time.Until(deadline), "node "+m.Addr+" reporting the cluster ok", func() bool {
			info, err := rc.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(masters))
		})
		_ = rc.Close()
	}
	return c
}

// Addrs are the masters' addresses.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		out[i] = m.Addr
	}
	return out
}

// MasterOf returns the address of the master that holds key's slot.
func (c *RedisCluster) MasterOf(t testing.TB, key string) string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.Masters[0].Addr})
	defer rdb.Close()
	ctx := context.Background()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatalf("testutil: CLUSTER KEYSLOT %s: %v", key, err)
	}
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("testutil: CLUSTER SLOTS: %v", err)
	}
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			return r.Nodes[0].Addr
		}
	}
	t.Fatalf("testutil: no master holds slot %d of %s", slot, key)
	return ""
}
