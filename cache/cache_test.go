package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	sltest "github.com/sloproxy/sloproxy/internal/testutil"
)

// TestMain fails the tests if a goroutine outlives them. go-redis's pool,
// after failing to dial a stopped server, probes it once a second until
// the client is closed: a probe asleep at Close ends within that second,
// so the check waits for it instead of ignoring sleeping goroutines.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(3 * time.Second)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// newCache returns a started cache on the Redis at addr ("" for L1 only),
// closed when the test ends, and its registry.
func newCache(t *testing.T, addr string, opts Options) (*Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Prefix == "" {
		opts.Prefix = "test:"
	}
	if addr != "" {
		client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 50 * time.Millisecond, ContextTimeoutEnabled: true})
		t.Cleanup(func() { client.Close() })
		opts.Redis = client
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, reg
}

// get looks one key up.
func get(c *Cache, k Key) ([]byte, Hit) {
	var outs [1][]byte
	var hits [1]Hit
	keys := []Key{k}
	if c.Get(keys, outs[:], hits[:]) > 0 {
		c.Fetch(context.Background(), keys, time.Minute, outs[:], hits[:])
	}
	return outs[0], hits[0]
}

func TestKey(t *testing.T) {
	base := NewKey("m", "1", "float32", []byte{1, 2, 3, 4})
	tests := []struct {
		name string
		key  Key
		same bool
	}{
		{"same fields", NewKey("m", "1", "float32", []byte{1, 2, 3, 4}), true},
		{"other version", NewKey("m", "2", "float32", []byte{1, 2, 3, 4}), false},
		{"other model", NewKey("n", "1", "float32", []byte{1, 2, 3, 4}), false},
		{"other input type", NewKey("m", "1", "int32", []byte{1, 2, 3, 4}), false},
		{"other input", NewKey("m", "1", "float32", []byte{1, 2, 3, 5}), false},
		{"other shape, same bytes", NewKey("m", "1", "float32", []byte{1, 2, 3, 4, 0, 0, 0, 0}), false},
		// Fields are length-prefixed: moving bytes between them changes the key.
		{"shifted boundary", NewKey("m1", "", "float32", []byte{1, 2, 3, 4}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.Index == base.Index && tt.key.Check == base.Check; got != tt.same {
				t.Fatalf("same key: %v, want %v", got, tt.same)
			}
			if !tt.same && (tt.key.Index == base.Index || tt.key.Check == base.Check) {
				t.Fatal("one of the two hashes is equal for different fields")
			}
		})
	}
}

func TestHitMissAndTwoProxies(t *testing.T) {
	addr := sltest.StartRedis(t)
	a, regA := newCache(t, addr, Options{})
	b, regB := newCache(t, addr, Options{})
	k := NewKey("m", "1", "string", []byte("hello"))
	if _, hit := get(a, k); hit != Miss {
		t.Fatalf("empty cache: %v, want a miss", hit)
	}
	a.Put(k, []byte(`"HELLO"`), time.Minute)
	if out, hit := get(a, k); hit != L1 || string(out) != `"HELLO"` {
		t.Fatalf("after Put: %q %v, want an L1 hit", out, hit)
	}
	// The other proxy finds it in Redis once the background write lands,
	// then in its own L1.
	sltest.Eventually(t, 5*time.Second, "an L2 hit on the other proxy", func() bool {
		out, hit := get(b, k)
		return hit == L2 && string(out) == `"HELLO"`
	})
	if out, hit := get(b, k); hit != L1 || string(out) != `"HELLO"` {
		t.Fatalf("second lookup on the other proxy: %q %v, want an L1 hit", out, hit)
	}
	// A new version of the model never sees the old version's entries.
	if _, hit := get(b, NewKey("m", "2", "string", []byte("hello"))); hit != Miss {
		t.Fatalf("version 2: %v, want a miss", hit)
	}
	if got := testutil.ToFloat64(metric(t, regA, "sloproxy_cache_fills_total")); got != 1 {
		t.Errorf("fills on A: %v, want 1", got)
	}
	if got := testutil.ToFloat64(metric(t, regB, "sloproxy_cache_lookups_total")); got < 3 {
		t.Errorf("lookups on B: %v, want at least 3", got)
	}
}

// metric finds a collector's current value by name through the registry.
func metric(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func TestTTL(t *testing.T) {
	addr := sltest.StartRedis(t)
	a, _ := newCache(t, addr, Options{})
	b, _ := newCache(t, addr, Options{})
	k := NewKey("m", "1", "bytes", []byte{7})
	a.Put(k, []byte("x"), 300*time.Millisecond)
	sltest.Eventually(t, 5*time.Second, "the entry in Redis", func() bool { _, hit := get(b, k); return hit == L2 })
	time.Sleep(400 * time.Millisecond)
	if _, hit := get(a, k); hit != Miss {
		t.Errorf("L1 after the TTL: %v, want a miss", hit)
	}
	c, _ := newCache(t, addr, Options{}) // a fresh L1: only Redis can answer
	if _, hit := get(c, k); hit != Miss {
		t.Errorf("Redis after the TTL: %v, want a miss", hit)
	}
}

func TestCollisionIsAMiss(t *testing.T) {
	addr := sltest.StartRedis(t)
	a, regA := newCache(t, addr, Options{})
	k1 := NewKey("m", "1", "bytes", []byte("one"))
	// Another input whose index collides with k1's: inject it, since
	// finding a real 128-bit SHA-256 collision is out of reach.
	k2 := NewKey("m", "1", "bytes", []byte("two"))
	k2.Index = k1.Index
	a.Put(k1, []byte("answer for one"), time.Minute)
	if out, hit := get(a, k2); hit != Miss {
		t.Fatalf("L1 answered the colliding key with %q (%v)", out, hit)
	}
	b, _ := newCache(t, addr, Options{})
	sltest.Eventually(t, 5*time.Second, "k1 in Redis", func() bool { _, hit := get(b, k1); return hit == L2 })
	// C's one lookup must reach Redis to see the collision: a lookup past
	// the default 5 ms budget (a loaded machine under -race) is a plain miss.
	c, regC := newCache(t, addr, Options{Timeout: 5 * time.Second})
	if out, hit := get(c, k2); hit != Miss {
		t.Fatalf("Redis answered the colliding key with %q (%v)", out, hit)
	}
	// A saw the collision in L1 (and in Redis too if its fill had landed
	// by then); C, with an empty L1, in Redis.
	if got := testutil.ToFloat64(metric(t, regA, "sloproxy_cache_collisions_total")); got < 1 {
		t.Errorf("collisions on A: %v, want at least 1", got)
	}
	if got := testutil.ToFloat64(metric(t, regC, "sloproxy_cache_collisions_total")); got != 1 {
		t.Errorf("collisions on C: %v, want 1", got)
	}
}

func TestPurge(t *testing.T) {
	addr := sltest.StartRedis(t)
	a, _ := newCache(t, addr, Options{})
	b, _ := newCache(t, addr, Options{})
	ka, kb := NewKey("a", "1", "bytes", []byte("x")), NewKey("b", "1", "bytes", []byte("x"))
	a.Put(ka, []byte("A"), time.Minute)
	a.Put(kb, []byte("B"), time.Minute)
	sltest.Eventually(t, 5*time.Second, "both in B's L1 through Redis", func() bool {
		_, h1 := get(b, ka)
		_, h2 := get(b, kb)
		return h1 != Miss && h2 != Miss
	})
	if err := a.Purge(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if _, hit := get(a, ka); hit != Miss {
		t.Errorf("model a on A after the purge: %v", hit)
	}
	sltest.Eventually(t, 5*time.Second, "model a purged from B's L1 too", func() bool { _, hit := get(b, ka); return hit == Miss })
	if out, hit := get(b, kb); hit == Miss || string(out) != "B" {
		t.Errorf("model b on B after purging a: %q %v, want it kept", out, hit)
	}
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	keys, err := client.Keys(context.Background(), "test:p:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !strings.HasPrefix(keys[0], "test:p:b:1:") {
		t.Errorf("Redis keys after purging a: %v, want only b's", keys)
	}
}

func TestDoCollapses(t *testing.T) {
	c, reg := newCache(t, "", Options{})
	k := NewKey("m", "1", "bytes", []byte("same"))
	var computed atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	outs := make([]string, 100)
	for i := range outs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			out, _, err := c.Do(ctx, k, time.Minute, func(context.Context) ([]byte, error) {
				computed.Add(1)
				<-release
				return []byte("result"), nil
			})
			if err != nil {
				outs[i] = err.Error()
				return
			}
			outs[i] = string(out)
		})
	}
	// One computes, the 99 others wait on its flight.
	sltest.Eventually(t, 10*time.Second, "99 callers waiting on the flight", func() bool {
		return testutil.ToFloat64(metric(t, reg, "sloproxy_cache_flight_waiters")) == 99
	})
	close(release)
	wg.Wait()
	if n := computed.Load(); n != 1 {
		t.Errorf("computed %d times for 100 concurrent identical misses, want 1", n)
	}
	for i, o := range outs {
		if o != "result" {
			t.Fatalf("caller %d got %q", i, o)
		}
	}
	if out, hit := get(c, k); hit != L1 || string(out) != "result" {
		t.Errorf("after the flight: %q %v, want it cached", out, hit)
	}
	if got := testutil.ToFloat64(metric(t, reg, "sloproxy_cache_collapsed_total")); got != 99 {
		t.Errorf("collapsed: %v, want 99 (every caller but the one that computed)", got)
	}
}

func TestDoErrorsAreNotCached(t *testing.T) {
	c, _ := newCache(t, "", Options{})
	k := NewKey("m", "1", "bytes", []byte("x"))
	boom := errors.New("model failed")
	if _, _, err := c.Do(context.Background(), k, time.Minute, func(context.Context) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Do: %v, want the computation's error", err)
	}
	if _, hit := get(c, k); hit != Miss {
		t.Fatalf("an error was cached: %v", hit)
	}
}

// TestDoAfterClose: a request that outlives the server's shutdown grace
// may call Do once Close has begun; it computes alone and caches nothing,
// rather than start a flight that Close's wait would miss.
func TestDoAfterClose(t *testing.T) {
	c, _ := newCache(t, "", Options{})
	c.Close()
	k := NewKey("m", "1", "bytes", []byte("late"))
	for range 2 {
		out, shared, err := c.Do(context.Background(), k, time.Minute, func(context.Context) ([]byte, error) { return []byte("late"), nil })
		if err != nil || shared || string(out) != "late" {
			t.Fatalf("Do after Close: %q, shared %v, %v; want its own computation's output", out, shared, err)
		}
	}
	if _, hit := c.getL1(k); hit {
		t.Error("Do after Close cached its output")
	}
}

// TestDoFlightOutlivesItsLeader: the query that started a flight leaves
// (its client went away); the one still waiting on it gets the output.
func TestDoFlightOutlivesItsLeader(t *testing.T) {
	c, reg := newCache(t, "", Options{})
	k := NewKey("m", "1", "bytes", []byte("shared"))
	started, release := make(chan struct{}), make(chan struct{})
	compute := func(ctx context.Context) ([]byte, error) {
		close(started)
		select {
		case <-release:
			return []byte("answer"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	leaderCtx, leave := context.WithTimeout(context.Background(), time.Minute)
	defer leave()
	leaderErr := make(chan error, 1)
	go func() {
		_, _, err := c.Do(leaderCtx, k, time.Minute, compute)
		leaderErr <- err
	}()
	<-started
	type result struct {
		out    []byte
		shared bool
		err    error
	}
	follower := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, shared, err := c.Do(ctx, k, time.Minute, func(context.Context) ([]byte, error) {
			t.Error("the follower started a second computation")
			return nil, nil
		})
		follower <- result{out, shared, err}
	}()
	sltest.Eventually(t, 10*time.Second, "the follower waiting on the flight", func() bool {
		return testutil.ToFloat64(metric(t, reg, "sloproxy_cache_flight_waiters")) == 1
	})
	leave()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v, want its own cancellation", err)
	}
	close(release)
	r := <-follower
	if r.err != nil || string(r.out) != "answer" || !r.shared {
		t.Fatalf("follower: %q shared=%v %v, want the shared answer", r.out, r.shared, r.err)
	}
	if out, hit := get(c, k); hit != L1 || string(out) != "answer" {
		t.Errorf("after the flight: %q %v, want it cached", out, hit)
	}
}

// TestDoLastWaiterEndsTheFlight: once every query waiting on a flight has
// left, its computation is cancelled, and a later miss computes afresh.
func TestDoLastWaiterEndsTheFlight(t *testing.T) {
	c, _ := newCache(t, "", Options{})
	k := NewKey("m", "1", "bytes", []byte("abandoned"))
	started, ended := make(chan struct{}), make(chan error, 1)
	ctx, leave := context.WithTimeout(context.Background(), time.Minute)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Do(ctx, k, time.Minute, func(ctx context.Context) ([]byte, error) {
			close(started)
			<-ctx.Done()
			ended <- ctx.Err()
			return nil, ctx.Err()
		})
		done <- err
	}()
	<-started
	leave()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do: %v, want its cancellation", err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the computation's context: %v, want it cancelled", err)
	}
	out, shared, err := c.Do(context.Background(), k, time.Minute, func(context.Context) ([]byte, error) { return []byte("fresh"), nil })
	if err != nil || string(out) != "fresh" || shared {
		t.Fatalf("the next miss: %q shared=%v %v, want a fresh computation", out, shared, err)
	}
}

func TestDoWaiterLeavesAtItsDeadline(t *testing.T) {
	c, _ := newCache(t, "", Options{})
	k := NewKey("m", "1", "bytes", []byte("slow"))
	started, release, led := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(led)
		_, _, _ = c.Do(context.Background(), k, time.Minute, func(context.Context) ([]byte, error) {
			close(started)
			<-release
			return []byte("late"), nil
		})
	}()
	defer func() { close(release); <-led }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.Do(ctx, k, time.Minute, func(context.Context) ([]byte, error) { t.Error("a second computation ran"); return nil, nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter: %v, want its deadline", err)
	}
	t.Logf("the waiter left %v after it joined (deadline 30ms)", time.Since(start))
}

// TestRedisDown stops Redis under a cache in use: lookups stay misses
// answered within the timeout, the breaker opens, and once Redis is back
// L2 hits resume without a restart.
func TestRedisDown(t *testing.T) {
	srv := sltest.NewRedisServer(t)
	a, reg := newCache(t, srv.Addr, Options{Timeout: 20 * time.Millisecond, BreakerCooldown: 200 * time.Millisecond})
	b, _ := newCache(t, srv.Addr, Options{Timeout: 20 * time.Millisecond, BreakerCooldown: 200 * time.Millisecond})
	srv.Stop()
	var slowest time.Duration
	for i := range 20 {
		k := NewKey("m", "1", "bytes", fmt.Appendf(nil, "down-%d", i))
		start := time.Now()
		if _, hit := get(a, k); hit != Miss {
			t.Fatalf("lookup %d with Redis down: %v", i, hit)
		}
		slowest = max(slowest, time.Since(start))
		a.Put(k, []byte("v"), time.Minute) // fills fail in the background
	}
	t.Logf("slowest lookup with Redis down: %v (timeout 20ms)", slowest)
	if got := testutil.ToFloat64(metric(t, reg, "sloproxy_cache_breaker_state")); got != 2 {
		t.Errorf("breaker state with Redis down: %v, want 2 (open)", got)
	}
	if got := testutil.ToFloat64(metric(t, reg, "sloproxy_cache_redis_bypassed_total")); got == 0 {
		t.Error("no Redis call was bypassed while the breaker was open")
	}

	srv.Start()
	k := NewKey("m", "1", "bytes", []byte("after"))
	// Fills resume once a trial call closes the breaker; B then reads
	// the entry from Redis.
	sltest.Eventually(t, 5*time.Second, "L2 hits after Redis came back", func() bool {
		a.Put(k, []byte("back"), time.Minute)
		out, hit := get(b, k)
		return hit == L2 && string(out) == "back"
	})
}

func TestL1IsBoundedByBytes(t *testing.T) {
	c, reg := newCache(t, "", Options{L1Bytes: 64 << 10})
	for i := range 200 {
		c.Put(NewKey("m", "1", "bytes", fmt.Appendf(nil, "%d", i)), make([]byte, 1024), time.Minute)
	}
	sltest.Eventually(t, 5*time.Second, "L1 within its bound", func() bool { c.l1.CleanUp(); return c.l1.WeightedSize() <= 64<<10 })
	if got := testutil.ToFloat64(metric(t, reg, "sloproxy_cache_l1_evictions_total")); got == 0 {
		t.Error("no eviction counted")
	}
}

// TestL1WeightIsItsHeap: the weight the L1 gives its entries is the heap
// they take, within a tenth or so, so that cache.l1_bytes bounds the
// proxy's memory as docs/operations.md says. The entries are those of a
// string app answered with its own input, about 40 bytes each.
func TestL1WeightIsItsHeap(t *testing.T) {
	c, _ := newCache(t, "", Options{L1Bytes: 1 << 30})
	const n = 50000
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = NewKey("noop", "1", "string", fmt.Appendf(nil, "query %d of the memory benchmark", i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, k := range keys {
		c.Put(k, fmt.Appendf(nil, `"query %d of the memory benchmark"`, i), time.Hour)
	}
	c.l1.CleanUp()
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	weight := float64(c.l1.WeightedSize()) / n
	t.Logf("an entry takes %.0f bytes of heap and weighs %.0f", heap, weight)
	if ratio := heap / weight; ratio > 1.15 || ratio < 0.7 {
		t.Fatalf("an entry takes %.0f bytes of heap and weighs %.0f (%.2f×); want them within about a tenth", heap, weight, ratio)
	}
	runtime.KeepAlive(keys)
}

// TestPutCopiesIntoL1: an output that is a slice of a larger buffer (a
// batch's frame) is stored in L1 as a copy of its own, so that the entry
// neither keeps the buffer alive nor changes with it.
func TestPutCopiesIntoL1(t *testing.T) {
	c, _ := newCache(t, "", Options{})
	frame := make([]byte, 1<<20)
	copy(frame[100:], "answer")
	out := frame[100:106:106]
	k := NewKey("m", "1", "bytes", []byte("in"))
	c.Put(k, out, time.Minute)
	copy(frame[100:], "AAAAAA")
	got, ok := c.getL1(k)
	if !ok || string(got) != "answer" {
		t.Fatalf("L1 holds %q, %v; want \"answer\", true", got, ok)
	}
	if &got[0] == &frame[100] {
		t.Fatal("L1's entry shares the frame")
	}
}
