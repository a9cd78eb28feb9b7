package oipgrpc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy"
	pb "github.com/sloproxy/sloproxy/proxy/oipgrpc/inferencepb"
	"github.com/sloproxy/sloproxy/state"
)

// callers is how many clients call at once in these benchmarks.
const callers = 64

// benchProxy runs a proxy (no prediction cache: every query reaches its
// model) with its REST handler on an httptest server and its gRPC server
// on a loopback listener, until the benchmark ends.
func benchProxy(b *testing.B, opts proxy.Options) (p *proxy.Proxy, restURL string, conn *grpc.ClientConn) {
	b.Helper()
	opts.Dispatch = dispatch.Options{HeartbeatInterval: 50 * time.Millisecond}
	p = proxy.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); p.Run(ctx) }()
	srv := httptest.NewServer(p.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := New(p, Options{})
	served := make(chan struct{})
	go func() { defer close(served); _ = g.GRPC().Serve(ln) }()
	conn, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		g.Shutdown(context.Background())
		<-served
		srv.Close()
		cancel()
		<-ran
	})
	return p, srv.URL, conn
}

// addApp registers model at addr and links it to app, then waits until
// the proxy has a ready replica.
func addApp(b *testing.B, p *proxy.Proxy, store *state.Store, app state.App, model, addr string) {
	b.Helper()
	ctx := context.Background()
	mv := state.ModelVersion{Model: model, Version: "1", InputType: app.InputType, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}
	for _, err := range []error{store.PutVersion(ctx, mv), store.SetReplicas(ctx, model, "1", []string{addr}),
		store.PutApp(ctx, app), store.Link(ctx, app.Name, model)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	testutil.Eventually(b, 30*time.Second, "a ready replica of "+model, func() bool { return p.ModelReady(model, "") == nil })
}

// concurrently runs b.N calls from callers goroutines and reports the
// throughput and the p50 and p99 of one call.
func concurrently(b *testing.B, call func(i int) error) {
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for g := range callers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t := time.Now()
				if err := call(int(i)); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				lat[g] = append(lat[g], time.Since(t))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

// post posts body to url and checks that a model answered.
func post(client *http.Client, url string, body []byte) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`"default":false`)) {
		return fmt.Errorf("%d %s", resp.StatusCode, out)
	}
	return nil
}

// postCounting is post that counts, rather than fails on, an answer the
// app's policies gave instead of the model (a default output, a 503 of a
// lookup past its timeout).
func postCounting(client *http.Client, fallbacks *atomic.Int64) func(url string, body []byte) error {
	return func(url string, body []byte) error {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200 && bytes.Contains(out, []byte(`"default":false`)):
		case resp.StatusCode == 200 || resp.StatusCode == 503:
			fallbacks.Add(1)
		default:
			return fmt.Errorf("%d %s", resp.StatusCode, out)
		}
		return nil
	}
}

// BenchmarkFrontDoors compares the front doors on the noop model (16
// float32 values, echoed), 64 callers at once: the query API
// (rest-predict), the OIP over REST (rest-oip) and the OIP over gRPC
// (grpc):
//
//	go test -run '^$' -bench FrontDoors -benchtime 20000x -count 3 ./proxy/oipgrpc/
func BenchmarkFrontDoors(b *testing.B) {
	addr := testutil.StartModel(b, []string{testutil.BuildGo(b, "./examples/noop"), "--input-type", "float32"}).Addr
	store := state.NewStore(nil, state.Options{})
	p, restURL, conn := benchProxy(b, proxy.Options{Store: store})
	addApp(b, p, store, state.App{Name: "bench", InputType: state.InputFloat32, SLO: time.Second}, "noop", addr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}}
	predict := []byte(`{"input": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`)
	oip := []byte(`{"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}`)
	stub := pb.NewGRPCInferenceServiceClient(conn)
	req := &pb.ModelInferRequest{ModelName: "bench", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 16}}},
		RawInputContents: [][]byte{make([]byte, 64)}}

	b.Run("rest-predict", func(b *testing.B) {
		concurrently(b, func(int) error { return post(client, restURL+"/apps/bench/predict", predict) })
	})
	b.Run("rest-oip", func(b *testing.B) {
		concurrently(b, func(int) error {
			resp, err := client.Post(restURL+"/v2/models/bench/infer", "application/json", bytes.NewReader(oip))
			if err != nil {
				return err
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || bytes.Contains(out, []byte(proxy.ParamDefault)) {
				return fmt.Errorf("%d %s", resp.StatusCode, out)
			}
			return nil
		})
	})
	b.Run("grpc", func(b *testing.B) {
		concurrently(b, func(int) error {
			resp, err := stub.ModelInfer(context.Background(), req)
			if err == nil && resp.GetParameters()[proxy.ParamDefault] != nil {
				err = fmt.Errorf("default output: %v", resp.GetParameters())
			}
			return err
		})
	})
}

// lookupMean is the mean time of the feature lookups reg has counted, in
// seconds: a request's wait for its round trip, from the request's view.
func lookupMean(b *testing.B, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sloproxy_feature_lookup_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum() / float64(h.GetSampleCount())
		}
	}
	return 0
}

// BenchmarkFeatures compares a digits app (scikit-learn's logistic
// regression, examples/sklearn) whose 64 pixels all come from Redis as
// features with the same app sent the 64 pixels in the request, 64
// callers at once, over the query API (not-model/op: the share of answers
// a policy gave, a shed or a lookup past its 50 ms timeout;
// lookup-mean-ms: the mean lookup); "redis" is one HMGET of 64 fields
// alone, one caller, the round trip a lookup adds at the least:
//
//	go test -run '^$' -bench Features -benchtime 15000x -count 3 ./proxy/oipgrpc/
func BenchmarkFeatures(b *testing.B) {
	testutil.RequirePython(b, "sklearn", "joblib")
	root := testutil.RepoRoot(b)
	addr := testutil.StartModel(b, []string{testutil.Python, filepath.Join(root, "examples", "sklearn", "serve.py"),
		"--model", filepath.Join(root, "examples", "sklearn", "digits_logreg.joblib"), "--input-type", "float64", "--name", "digits"}).Addr
	raddr := testutil.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: raddr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { rdb.Close() })
	const users = 500
	fields := make([]features.Field, 64)
	rows := make([]string, users)
	for i := range fields {
		fields[i] = features.Field{Name: "p" + strconv.Itoa(i)}
	}
	for u := range users {
		vals := make([]any, 0, 128)
		pix := make([]string, 64)
		for i := range 64 {
			v := float64((u*7 + i*3) % 17)
			vals = append(vals, fields[i].Name, v)
			pix[i] = strconv.FormatFloat(v, 'f', -1, 64)
		}
		if err := rdb.HSet(context.Background(), "user:"+strconv.Itoa(u), vals...).Err(); err != nil {
			b.Fatal(err)
		}
		rows[u] = "[" + strings.Join(pix, ",") + "]"
	}
	reg := prometheus.NewRegistry()
	lookups := features.NewTable(features.Options{Redis: rdb, Registerer: reg})
	if err := lookups.Set(map[string]features.Spec{"fx": {Key: "user:{user_id}", Fields: fields, Missing: features.NotFound, Timeout: 50 * time.Millisecond}}); err != nil {
		b.Fatal(err)
	}
	store := state.NewStore(nil, state.Options{})
	p, restURL, _ := benchProxy(b, proxy.Options{Store: store, Features: lookups})
	addApp(b, p, store, state.App{Name: "sent", InputType: state.InputFloat64, SLO: time.Second}, "digits", addr)
	addApp(b, p, store, state.App{Name: "fx", InputType: state.InputFloat64, SLO: time.Second}, "digits", addr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}}

	b.Run("sent", func(b *testing.B) {
		var fallbacks atomic.Int64
		post := postCounting(client, &fallbacks)
		concurrently(b, func(i int) error {
			return post(restURL+"/apps/sent/predict", []byte(`{"input": `+rows[i%users]+`}`))
		})
		b.ReportMetric(float64(fallbacks.Load())/float64(b.N), "not-model/op")
	})
	b.Run("redis", func(b *testing.B) {
		names := make([]string, 64)
		for i, f := range fields {
			names[i] = f.Name
		}
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			t := time.Now()
			if err := rdb.HMGet(context.Background(), "user:"+strconv.Itoa(i%users), names...).Err(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	})
	b.Run("features", func(b *testing.B) {
		var fallbacks atomic.Int64
		post := postCounting(client, &fallbacks)
		concurrently(b, func(i int) error {
			return post(restURL+"/apps/fx/predict", []byte(`{"input": [], "entity": {"user_id": "`+strconv.Itoa(i%users)+`"}}`))
		})
		b.ReportMetric(float64(fallbacks.Load())/float64(b.N), "not-model/op")
		b.ReportMetric(lookupMean(b, reg)*1000, "lookup-mean-ms")
	})
}
