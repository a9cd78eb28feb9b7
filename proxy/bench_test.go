package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// The proxy's overhead over calling the container directly, on the noop
// container (another process, loopback):
//
//	go test -run '^$' -bench 'Overhead|Handler' -benchmem ./proxy/
//
// BenchmarkOverhead/direct is the Go RPC client calling the noop;
// BenchmarkOverhead/proxy is an HTTP client calling the proxy over one
// keep-alive connection, the proxy calling the same noop. Both report the
// p50 and p99 of the per-call latency; the difference is what the proxy
// adds. BenchmarkHandler calls the handler in-process (no HTTP client) to
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

func BenchmarkHandler(b *testing.B) {
	addr := testutil.StartModel(b, []string{testutil.BuildGo(b, "./examples/noop"), "--input-type", "float32"}).Addr
	h := benchEnv(b, addr).Handler()
	body := `{"input": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/apps/bench/predict", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// benchEnv is a started proxy with app "bench" on the noop at addr.
func benchEnv(b *testing.B, addr string) *Proxy {
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
	p := New(Options{Store: store})
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
