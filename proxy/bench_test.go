package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// The proxy's overhead over calling the container directly, on the noop
// container (another process, loopback):
//
//	go test -run '^$' -bench 'Overhead|Handler' -benchmem ./proxy/
//
// BenchmarkOverhead/direct is the Go RPC client calling the noop;
// BenchmarkOverhead/dispatcher is a dispatcher with the default batching
// policy (controller and governor) calling it; BenchmarkOverhead/bare-http
// is an HTTP client calling a handler that answers without a model, the
// floor of the HTTP hop; BenchmarkOverhead/proxy is an HTTP client calling
// the proxy over one keep-alive connection, the proxy calling the same
// noop. Each reports the p50 and p99 of the per-call latency; proxy minus
// direct is what the proxy adds. BenchmarkHandler calls the handler in-process (no HTTP client) to
// count the proxy's own allocations per query.
func BenchmarkOverhead(b *testing.B) {
	addr := testutil.StartModel(b, []string{testutil.BuildGo(b, "./examples/noop"), "--input-type", "float32"}).Addr
	input := rpc.AppendFloat32s(nil, make([]float32, 16))
	body := []byte(`{"input": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`)

	b.Run("direct", func(b *testing.B) {
		c := rpc.NewClient(addr, rpc.ClientOptions{})
		c.Start(context.Background())
		defer c.Close()
		if _, err := c.WaitReady(context.Background()); err != nil {
			b.Fatal(err)
		}
		inputs := [][]byte{input}
		latencies(b, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, err := c.Predict(ctx, rpc.Float32, inputs); err != nil {
				b.Fatal(err)
			}
			cancel()
		})
	})
	b.Run("dispatcher", func(b *testing.B) {
		d := dispatch.New(dispatch.Options{InputType: rpc.Float32, Model: "bench", Version: "1",
			NewController: slo.DefaultBatching.NewSeededController(nil), Governor: slo.DefaultBatching.NewSeededGovernor(nil)})
		d.Start(context.Background())
		defer d.Close()
		d.SetReplicas([]string{addr})
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, h := d.Replicas(); h > 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the noop never became healthy")
			}
		}
		latencies(b, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, _, err := d.Predict(ctx, input); err != nil {
				b.Fatal(err)
			}
			cancel()
		})
	})
	b.Run("bare-http", func(b *testing.B) {
		// The floor of the HTTP hop: a handler that reads the body and
		// answers without a model, over the same kind of connection.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"output":"","default":false}`))
		}))
		defer srv.Close()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		latencies(b, func() {
			resp, err := client.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	})
	b.Run("proxy", func(b *testing.B) {
		e := benchEnv(b, addr)
		srv := httptest.NewServer(e.Handler())
		defer srv.Close()
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		url := srv.URL + "/apps/bench/predict"
		latencies(b, func() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`"default":false`)) {
				b.Fatalf("%d %s", resp.StatusCode, out)
			}
		})
	})
}

// BenchmarkHandler counts the handler's own allocations per query,
// in-process: one request and one response writer serve every iteration,
// so what it counts is the proxy's. Answered by the noop ("model"), and
// answered from the prediction cache's L1 ("cache-hit").
func BenchmarkHandler(b *testing.B) {
	addr := testutil.StartModel(b, []string{testutil.BuildGo(b, "./examples/noop"), "--input-type", "float32"}).Addr
	c, err := cache.New(cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, bb := range []struct {
		name    string
		cache   *cache.Cache
		guarded bool // wrapped as serve wraps each listener (Recoverer)
	}{{"model", nil, false}, {"cache-hit", c, false}, {"cache-hit-guarded", c, true}} {
		b.Run(bb.name, func(b *testing.B) {
			h := benchEnvWith(b, addr, bb.cache, nil).Handler()
			if bb.guarded {
				h = NewRecoverer(prometheus.NewRegistry(), nil).Wrap("query", h)
			}
			body := `{"input": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`
			rd := strings.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, "/apps/bench/predict", rd)
			w := &benchWriter{header: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				w.reset()
				h.ServeHTTP(w, req)
				if w.code != 200 || w.n == 0 {
					b.Fatal(w.code, w.n)
				}
			}
		})
	}
}

// benchWriter is a reusable http.ResponseWriter that keeps the status and
// counts the body's bytes.
type benchWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.header }

func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(b)
	return len(b), nil
}

func (w *benchWriter) reset() {
	clear(w.header)
	w.code, w.n = 0, 0
}

// benchEnv is a started proxy with app "bench" on the noop at addr.
func benchEnv(b *testing.B, addr string) *Proxy {
	b.Helper()
	return benchEnvWith(b, addr, nil, nil)
}

// benchEnvWith is benchEnv with a prediction cache (nil for none).
// reg, when set, is the proxy's registry.
func benchEnvWith(b *testing.B, addr string, c *cache.Cache, reg *prometheus.Registry) *Proxy {
	b.Helper()
	store := state.NewStore(nil, state.Options{})
	ctx := context.Background()
	mv := state.ModelVersion{Model: "noop", Version: "1", InputType: state.InputFloat32, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}
	for _, err := range []error{
		store.PutVersion(ctx, mv),
		store.SetReplicas(ctx, "noop", "1", []string{addr}),
		store.PutApp(ctx, state.App{Name: "bench", InputType: state.InputFloat32, SLO: time.Second}),
		store.Link(ctx, "bench", "noop"),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	p := New(Options{Store: store, Cache: c, Registry: reg})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(runCtx) }()
	b.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d := p.pool.get("noop", "1"); d != nil {
			if _, h := d.Replicas(); h > 0 {
				return p
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("noop never became healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// latencies runs call b.N times and reports the p50 and p99 latency.
func latencies(b *testing.B, call func()) {
	b.Helper()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		call()
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkVsBare compares the proxy over real sockets with a bare
// net/http handler that decodes the same JSON with encoding/json and
// writes a response of the same size. One load drives both: 64
// goroutines posting {"input": [16 zeros]} over keep-alive connections
// to a loopback server. "cache-hit" is the proxy answering from L1 (HTTP,
// input parsing, key hashing, lookup, answer); "model" is the proxy
// asking the noop for every query (Cache-Control: no-cache). The two
// servers take turns in rounds of 400 ms (ABBA order), since on a 2-core
// machine whichever runs second in a plain sequence is measured slower;
// it reports each one's requests per second and their ratio. Run it once
// a count:
//
//	go test -run '^$' -bench VsBare -benchtime 1x -count 3 ./proxy/
func BenchmarkVsBare(b *testing.B) {
	addr := testutil.StartModel(b, []string{testutil.BuildGo(b, "./examples/noop"), "--input-type", "float32"}).Addr
	body := []byte(`{"input": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`)
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Options{Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := benchEnvWith(b, addr, c, reg)
	proxySrv := httptest.NewServer(p.Handler())
	defer proxySrv.Close()
	first := postOnce(b, proxySrv.URL+"/apps/bench/predict", body) // fills the cache
	answer := bytes.Repeat([]byte("x"), len(first))
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req struct {
			Input []float32 `json:"input"`
		}
		if err := json.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer bare.Close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	defer client.CloseIdleConnections()
	// load posts to url from 64 goroutines for d and returns the count;
	// noCache asks the proxy to bypass its cache.
	load := func(url string, noCache bool, d time.Duration) int64 {
		var n atomic.Int64
		stop := time.Now().Add(d)
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					req.Header.Set("Content-Type", "application/json")
					if noCache {
						req.Header.Set("Cache-Control", "no-cache")
					}
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					got, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					// The proxy's answers vary by a few bytes (query id
					// and latency digits).
					if d := got - int64(len(first)); resp.StatusCode != 200 || d < -16 || d > 16 {
						b.Errorf("%s: %d, %d bytes", url, resp.StatusCode, got)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	urls := map[string]string{"bare": bare.URL + "/", "proxy": proxySrv.URL + "/apps/bench/predict"}
	const round = 400 * time.Millisecond
	for _, mode := range []string{"cache-hit", "model"} {
		b.Run(mode, func(b *testing.B) {
			noCache := mode == "model"
			for b.Loop() {
				counts := map[string]int64{}
				load(urls["bare"], false, round/2) // warm up both: connections, caches
				load(urls["proxy"], noCache, round/2)
				for i := range 8 {
					order := []string{"bare", "proxy"}
					if i%2 == 1 {
						order = []string{"proxy", "bare"}
					}
					for _, name := range order {
						counts[name] += load(urls[name], noCache && name == "proxy", round)
					}
				}
				secs := (8 * round).Seconds()
				b.ReportMetric(float64(counts["bare"])/secs, "bare-req/s")
				b.ReportMetric(float64(counts["proxy"])/secs, "proxy-req/s")
				b.ReportMetric(float64(counts["proxy"])/float64(counts["bare"]), "proxy/bare")
			}
		})
	}
	if n := testutilCounter(b, p, "sloproxy_cache_hits_total"); n == 0 {
		b.Fatal("the proxy answered without a cache hit")
	}
}

func postOnce(b *testing.B, url string, body []byte) []byte {
	b.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`"default":false`)) {
		b.Fatalf("%d %s", resp.StatusCode, out)
	}
	return out
}

// testutilCounter sums a counter of the proxy's registry.
func testutilCounter(b *testing.B, p *Proxy, name string) float64 {
	mfs, err := p.opts.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
