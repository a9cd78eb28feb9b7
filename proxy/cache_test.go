package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// countingModel serves an upper-casing string model over a real TCP
// socket and counts the inputs it computes: what reaches the container.
type countingModel struct {
	addr   string
	inputs atomic.Int64
}

func startCountingModel(t *testing.T, delay time.Duration) *countingModel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	m := &countingModel{addr: ln.Addr().String()}
	srv := rpc.NewServer(rpc.ModelFunc(func(ctx context.Context, inputs [][]byte) ([]rpc.Output, error) {
		m.inputs.Add(int64(len(inputs)))
		time.Sleep(delay)
		outs := make([]rpc.Output, len(inputs))
		for i, in := range inputs {
			outs[i].Data = []byte(`"` + strings.ToUpper(string(in)) + `"`)
		}
		return outs, nil
	}), rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.String, Model: "upper", ModelVersion: "1"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// newCacheOn returns a started cache on the Redis at addr, closed when the
// test ends, with its metrics in reg.
func newCacheOn(t *testing.T, addr string, reg prometheus.Registerer) *cache.Cache {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	c, err := cache.New(cache.Options{Redis: client, Prefix: "proxytest:", Timeout: 250 * time.Millisecond,
		BreakerCooldown: 100 * time.Millisecond, Registerer: reg})
	must(t, err)
	must(t, c.Start(context.Background()))
	t.Cleanup(func() { c.Close(); client.Close() })
	return c
}

func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || l.GetValue() == label {
					v += m.GetCounter().GetValue()
					break
				}
			}
			if len(m.GetLabel()) == 0 {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// filled reports whether the fill of app upper's prediction for input
// lands in the Redis at addr within half a second. The proxy writes its
// fills in the background and drops them while its breaker is open, so a
// test looks for the key rather than assume it is there.
func filled(t *testing.T, addr, input string) bool {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	key := fmt.Sprintf("proxytest:p:upper:1:%x", cache.NewKey("upper", "1", "string", []byte(input)).Index)
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n, _ := client.Exists(context.Background(), key).Result(); n == 1 {
			return true
		}
	}
	return false
}

// TestCacheThroughTheProxy: real Redis, a real RPC server counting what
// reaches it, two proxies sharing the Redis.
func TestCacheThroughTheProxy(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	model := startCountingModel(t, 50*time.Millisecond)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	storeA, storeB := redisStore(t, srv.Addr), redisStore(t, srv.Addr)
	a := newEnvWith(t, storeA, newCacheOn(t, srv.Addr, regA), regA)
	b := newEnvWith(t, storeB, newCacheOn(t, srv.Addr, regB), regB)
	app := state.App{Name: "upper", InputType: state.InputString, SLO: 2 * time.Second, DefaultOutput: `"none"`}
	a.addModel(app, "upper", model.addr)
	b.waitHealthy("upper", "1")

	t.Run("100 concurrent identical queries reach the container once", func(t *testing.T) {
		var wg sync.WaitGroup
		var wrong atomic.Int32
		for range 100 {
			wg.Go(func() {
				status, m := a.post("/apps/upper/predict", `{"input": "same"}`)
				if status != 200 || m["output"] != "SAME" || m["default"] != false {
					wrong.Add(1)
				}
			})
		}
		wg.Wait()
		if n := model.inputs.Load(); n != 1 {
			t.Errorf("the container computed %d inputs for 100 identical queries, want 1", n)
		}
		if wrong.Load() > 0 {
			t.Errorf("%d of 100 answers were not the model's output", wrong.Load())
		}
	})

	t.Run("the other proxy hits Redis, then its own L1", func(t *testing.T) {
		// A writes its fills to Redis in the background, and drops them
		// while its breaker is open (which a loaded machine can cause:
		// the burst above ran 100 lookups at once). Find
		// an input whose fill landed.
		var input string
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; input == ""; i++ {
			if time.Now().After(deadline) {
				t.Fatal("none of proxy A's fills reached Redis within 10 s")
			}
			in := fmt.Sprintf("shared%d", i)
			a.post("/apps/upper/predict", `{"input": "`+in+`"}`)
			if filled(t, srv.Addr, in) {
				input = in
			}
		}
		before := model.inputs.Load()
		l1, l2 := counter(t, regB, "sloproxy_cache_hits_total", "l1"), counter(t, regB, "sloproxy_cache_hits_total", "l2")
		for i := range 2 {
			status, m := b.post("/apps/upper/predict", `{"input": "`+input+`"}`)
			if status != 200 || m["output"] != strings.ToUpper(input) || m["default"] != false {
				t.Fatalf("query %d on B: %d %v", i, status, m)
			}
		}
		if got := counter(t, regB, "sloproxy_cache_hits_total", "l2") - l2; got != 1 {
			t.Errorf("L2 hits on B: %v, want 1 (its first query)", got)
		}
		if got := counter(t, regB, "sloproxy_cache_hits_total", "l1") - l1; got != 1 {
			t.Errorf("L1 hits on B: %v, want 1 (its second query)", got)
		}
		if n := model.inputs.Load() - before; n != 0 {
			t.Errorf("B's queries reached the container %d times, want 0", n)
		}
	})

	t.Run("a batch looks its misses up together and fills", func(t *testing.T) {
		before := model.inputs.Load()
		status, m := a.post("/apps/upper/predict", `{"input_batch": ["same", "x1", "x2"]}`)
		preds, _ := m["batch_predictions"].([]any)
		if status != 200 || len(preds) != 3 {
			t.Fatalf("%d %v", status, m)
		}
		for i, want := range []string{"SAME", "X1", "X2"} {
			if p := preds[i].(map[string]any); p["output"] != want {
				t.Errorf("batch_predictions[%d]: %v, want %s", i, p, want)
			}
		}
		if n := model.inputs.Load() - before; n != 2 {
			t.Errorf("the container computed %d inputs for a batch with one cached, want 2", n)
		}
		a.post("/apps/upper/predict", `{"input_batch": ["same", "x1", "x2"]}`)
		if n := model.inputs.Load() - before; n != 2 {
			t.Errorf("the same batch again reached the container (%d inputs in all)", n)
		}
	})

	t.Run("an app that opts out always reaches the model", func(t *testing.T) {
		ctx := context.Background()
		must(t, storeA.PutApp(ctx, state.App{Name: "fresh", InputType: state.InputString, SLO: 2 * time.Second, NoCache: true}))
		must(t, storeA.Link(ctx, "fresh", "upper"))
		before := model.inputs.Load()
		for range 3 {
			if status, m := a.post("/apps/fresh/predict", `{"input": "same"}`); status != 200 || m["output"] != "SAME" {
				t.Fatalf("%d %v", status, m)
			}
		}
		if n := model.inputs.Load() - before; n != 3 {
			t.Errorf("3 queries of a no_cache app: the container computed %d inputs, want 3", n)
		}
	})

	t.Run("default outputs are not cached", func(t *testing.T) {
		slow := startCountingModel(t, 300*time.Millisecond)
		app := state.App{Name: "hurry", InputType: state.InputString, SLO: 50 * time.Millisecond, DefaultOutput: `"late"`}
		a.addModel(app, "slowupper", slow.addr)
		for i := range 2 {
			status, m := a.post("/apps/hurry/predict", `{"input": "q"}`)
			if status != 200 || m["default"] != true {
				t.Fatalf("query %d: %d %v, want the default", i, status, m)
			}
		}
		// A cached default would keep the second query from the model.
		testutil.Eventually(t, 10*time.Second, "the second query reaches the model", func() bool { return slow.inputs.Load() >= 2 })
	})

	t.Run("Redis stopped while queries flow, then started again", func(t *testing.T) {
		srv.Stop()
		var defaults, failures int
		for i := range 50 {
			status, m := a.post("/apps/upper/predict", fmt.Sprintf(`{"input": "down%d"}`, i))
			switch {
			case status == http.StatusOK && m["default"] == false && m["output"] == strings.ToUpper(fmt.Sprintf("down%d", i)):
			case status == http.StatusOK && m["default"] == true:
				// The SLO is 2 s and the model takes 50 ms: a default
				// here means Redis held the query up to its deadline.
				defaults++
				t.Errorf("with Redis down, query %d got the default output: %v", i, m)
			default:
				failures++
				t.Errorf("with Redis down: %d %v", status, m)
			}
		}
		t.Logf("Redis down: 50 queries, %d defaults, %d failures", defaults, failures)
		srv.Start()
		// Proxy B must find in Redis what proxy A fills from now on,
		// without either being restarted.
		deadline := time.Now().Add(10 * time.Second)
		l2Before := counter(t, regB, "sloproxy_cache_hits_total", "l2")
		for i := 0; counter(t, regB, "sloproxy_cache_hits_total", "l2") == l2Before; i++ {
			if time.Now().After(deadline) {
				t.Fatal("no L2 hit within 10 s of Redis coming back")
			}
			in := fmt.Sprintf("back%d", i)
			a.post("/apps/upper/predict", `{"input": "`+in+`"}`)
			if filled(t, srv.Addr, in) {
				b.post("/apps/upper/predict", `{"input": "`+in+`"}`)
			}
		}
	})
}
