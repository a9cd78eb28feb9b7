package answered

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/selection"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMemoryShadowRacesPut has the shadow's answer come while its query is
// being remembered, as selection's shadow goroutine may: run with -race,
// and every record ends up with it.
func TestMemoryShadowRacesPut(t *testing.T) {
	r := New(Options{Size: 64})
	for i := range 64 {
		id := fmt.Sprint("q", i)
		q := single("app", "m", "7")
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Shadowed(id, q, []byte("s"))
		}()
		r.Put(id, []byte(id), q)
		<-done
		got, ok := r.own.take(id, "app")
		if !ok || string(got.Shadow()) != "s" {
			t.Fatalf("%s: took %+v, %v; want the shadow's answer s", id, got, ok)
		}
	}
}

// BenchmarkMemoryPut is what remembering an answered query of a
// single-model app costs, with the memory full.
func BenchmarkMemoryPut(b *testing.B) {
	r := New(Options{})
	inputs := make([][]byte, 1024)
	for i := range inputs {
		inputs[i] = fmt.Appendf(nil, "[%d, 0, 0, 0]", i)
	}
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprint("0123456789abcdef-", i)
	}
	for i := range DefaultSize {
		r.Put(ids[i%len(ids)], inputs[i%len(inputs)], single("bench", "m", "7"))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Put(ids[i%len(ids)], inputs[i%len(inputs)], single("bench", "m", "7"))
	}
}

// BenchmarkMemoryMark is what the collector's marking of a full memory
// costs: a forced collection with the memory live.
func BenchmarkMemoryMark(b *testing.B) {
	r := New(Options{})
	for i := range DefaultSize {
		r.Put(fmt.Sprint("0123456789abcdef-", i), fmt.Appendf(nil, "[%d, 0, 0, 0]", i), single("bench", "m", "7"))
	}
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(r)
}

// onRedis runs f on a client of one redis-server and on a client of a
// three-master Redis Cluster, where each script must touch keys of one
// slot only.
func onRedis(t *testing.T, f func(t *testing.T, client redis.UniversalClient)) {
	t.Run("server", func(t *testing.T) {
		client := redis.NewClient(&redis.Options{Addr: testutil.StartRedis(t)})
		t.Cleanup(func() { _ = client.Close() })
		f(t, client)
	})
	t.Run("cluster", func(t *testing.T) {
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testutil.StartRedisCluster(t, 3).Addrs()})
		t.Cleanup(func() { _ = client.Close() })
		f(t, client)
	})
}

// TestSharedQueryCannotComeBack drives the Redis side of the memory on a
// real Redis through the orders in which a query's write and its feedback
// may arrive.
func TestSharedQueryCannotComeBack(t *testing.T) {
	onRedis(t, sharedQueryCannotComeBack)
}

func sharedQueryCannotComeBack(t *testing.T, client redis.UniversalClient) {
	sh := newShared(Options{Redis: client, Prefix: "sq:"}, prometheus.NewRegistry(), zap.NewNop())
	ctx := context.Background()
	q := &Query{App: "app", Choice: selection.Choice{Arms: []string{"a", "b"}, Probs: []float64{0.5, 0.5}}, Outs: [][]byte{[]byte(`1`), nil}}
	write := func(id string) {
		sh.write(ctx, []sharedWrite{{id: id, q: q, input: inputKey{"app", 1}}})
	}
	write("written")
	if _, st, err := sh.take(ctx, "written", "other-app"); err != nil || st != sharedAbsent {
		t.Errorf("take as another app: %v, %v; want absent", st, err)
	}
	got, st, err := sh.take(ctx, "written", "app")
	if err != nil || st != sharedFound || !reflect.DeepEqual(got.Choice, q.Choice) || !reflect.DeepEqual(got.Outs, q.Outs) {
		t.Fatalf("take: %+v, %v, %v; want the query as written", got, st, err)
	}
	if _, st, _ := sh.take(ctx, "written", "app"); st != sharedTaken {
		t.Errorf("second take: %v; want taken", st)
	}
	mustDo(t, sh.restore(ctx, "written"))
	if _, st, _ := sh.take(ctx, "written", "app"); st != sharedFound {
		t.Errorf("take after restore: %v; want found", st)
	}
	// Scored before its write arrived: the write must not bring it back.
	if taken, err := sh.mark(ctx, "late"); err != nil || taken {
		t.Fatalf("mark: %v, %v", taken, err)
	}
	write("late")
	if _, st, _ := sh.take(ctx, "late", "app"); st != sharedTaken {
		t.Errorf("take after a late write: %v; want taken", st)
	}
	if id, ok, err := sh.idOf(ctx, inputKey{"app", 1}); err != nil || !ok || id != "late" {
		t.Errorf("idOf: %q %v %v; want the latest query written, late", id, ok, err)
	}
	if ttl := client.TTL(ctx, "sq:recent:q:written").Val(); ttl <= 0 || ttl > DefaultSharedTTL {
		t.Errorf("TTL of a query %v; want up to %v", ttl, DefaultSharedTTL)
	}
	// A record that is not a query cannot be scored, now or on a retry:
	// not found, not unavailable.
	mustDo(t, client.HSet(ctx, "sq:recent:q:garbled", "q", "{", "a", "app").Err())
	if _, _, err := sh.take(ctx, "garbled", "app"); !errors.Is(err, ErrUnreadable) {
		t.Errorf("take of a garbled record: %v; want ErrUnreadable", err)
	}
	if _, st, err := sh.take(ctx, "garbled", "app"); err != nil || st != sharedTaken {
		t.Errorf("second take of a garbled record: %v, %v; want taken", st, err)
	}
}

// TestSharedSizeBound writes more queries than Options.SharedSize, from
// two proxies: Redis keeps the latest SharedSize, and forgets the others'
// records and input keys, except an input key that a later query took
// over.
func TestSharedSizeBound(t *testing.T) {
	onRedis(t, func(t *testing.T, client redis.UniversalClient) {
		const size, n = 10, 25
		ctx := context.Background()
		var shs [2]*shared
		for i := range shs {
			shs[i] = newShared(Options{Redis: client, Prefix: "sb:", SharedSize: size}, prometheus.NewRegistry(), zap.NewNop())
		}
		q := &Query{App: "app", Choice: selection.Choice{Arms: []string{"a"}, Probs: []float64{1}}, Outs: [][]byte{[]byte(`1`)}}
		for i := range n {
			// Input 0 again for the last query: its key must stay.
			input := uint64(i)
			if i == n-1 {
				input = 0
			}
			shs[i%2].write(ctx, []sharedWrite{{id: fmt.Sprint("q", i), q: q, input: inputKey{"app", input}}})
		}
		for i := range n {
			_, st, err := shs[0].take(ctx, fmt.Sprint("q", i), "app")
			mustDo(t, err)
			if want := i >= n-size; (st == sharedFound) != want {
				t.Errorf("query q%d of %d: %v; want found %v (Redis keeps the latest %d)", i, n, st, want, size)
			}
		}
		if id, ok, err := shs[1].idOf(ctx, inputKey{"app", 1}); err != nil || ok {
			t.Errorf("the input of a forgotten query: %q %v %v; want forgotten", id, ok, err)
		}
		if id, ok, err := shs[1].idOf(ctx, inputKey{"app", 0}); err != nil || !ok || id != fmt.Sprint("q", n-1) {
			t.Errorf("the input of forgotten q0, taken over by q%d: %q %v %v; want q%d", n-1, id, ok, err, n-1)
		}
		if l := client.LLen(ctx, "sb:recent:order").Val(); l != size {
			t.Errorf("the order list holds %d; want %d", l, size)
		}
	})
}
