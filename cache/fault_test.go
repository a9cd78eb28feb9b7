package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// The tests in this file run the real sloproxy binary on a real
// redis-server and real model processes.

// answer is what the query API answers for one input.
type answer struct {
	Output      json.RawMessage `json:"output"`
	Default     bool            `json:"default"`
	Explanation string          `json:"default_explanation"`
	Error       string          `json:"error"`
	LatencyMS   float64         `json:"latency_ms"`
}

// predict posts body to app on the proxy's query listener.
func predict(t testing.TB, client *http.Client, addr, app, body string) (int, answer) {
	t.Helper()
	status, a, err := post(client, addr, app, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, a
}

// post is predict for goroutines other than the test's.
func post(client *http.Client, addr, app, body string) (int, answer, error) {
	resp, err := client.Post("http://"+addr+"/apps/"+app+"/predict", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, answer{}, fmt.Errorf("POST %s: %w", app, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, answer{}, fmt.Errorf("POST %s: reading the answer: %w", app, err)
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return 0, answer{}, fmt.Errorf("POST %s: %d %q is not an answer: %w", app, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, a, nil
}

// waitModel waits until app answers with its model's output.
func waitModel(t testing.TB, addr, app, body string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, app+" answered by its model", func() bool {
		resp, err := http.Post("http://"+addr+"/apps/"+app+"/predict", "application/json", strings.NewReader(body))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var a answer
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&a) == nil && !a.Default
	})
}

// metrics scrapes the proxy's /metrics and returns each sample's value by
// its name and labels as Prometheus prints them (name{label="value"}).
func metrics(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeTextPlain))
	samples, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, decodeAll(t, dec)...)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	m := make(map[string]float64, len(samples))
	for _, s := range samples {
		m[s.Metric.String()] = float64(s.Value)
	}
	return m
}

// sum adds up the samples of the metric name, whatever their labels.
func sum(m map[string]float64, name string) float64 {
	var v float64
	for k, x := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			v += x
		}
	}
	return v
}

func decodeAll(t testing.TB, dec expfmt.Decoder) []*dto.MetricFamily {
	t.Helper()
	var mfs []*dto.MetricFamily
	for {
		mf := new(dto.MetricFamily)
		if err := dec.Decode(mf); err == io.EOF {
			return mfs
		} else if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		mfs = append(mfs, mf)
	}
}

// proxyConfig is a proxy on fresh loopback ports, on the Redis at
// redisAddr ("" for none), with extra YAML appended.
func proxyConfig(t testing.TB, redisAddr, extra string) string {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "listen: %s\nadmin: {listen: %s, token: t}\n", testutil.FreeAddr(t), testutil.FreeAddr(t))
	if redisAddr != "" {
		fmt.Fprintf(&b, "redis: {addr: %q, prefix: \"fault:\"}\n", redisAddr)
	}
	fmt.Fprintf(&b, "runtimes: {process: {enabled: true, port_base: %d}}\n", testutil.FreePort(t))
	b.WriteString(extra)
	return b.String()
}

// TestStalledRedisCostsAtMostTheTimeout stalls Redis (SIGSTOP) under a
// proxy with cache and state in it: each query with a new input still gets
// its model's answer well within its 2 s SLO, since its lookup gives up
// after cache.redis_timeout (go-redis's own read timeout, seconds, must not
// apply), and the breaker opens so that later queries skip Redis.
func TestStalledRedisCostsAtMostTheTimeout(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	noop := testutil.BuildGo(t, "./examples/noop")
	p := testutil.StartProxy(t, proxyConfig(t, srv.Addr, fmt.Sprintf(`
cache: {redis_timeout: 50ms}
apps:
  - {name: echo, input_type: string, slo: 2s, default_output: '"late"', models: [noop]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
`, noop)))
	waitModel(t, p.Query, "echo", `{"input": "warm"}`)

	srv.Pause()
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 6 {
		status, a := predict(t, client, p.Query, "echo", fmt.Sprintf(`{"input": "stalled %d"}`, i))
		if status != http.StatusOK || a.Default || string(a.Output) != fmt.Sprintf(`"stalled %d"`, i) {
			t.Fatalf("query %d with Redis stalled: %d %+v, want the model's answer", i, status, a)
		}
		t.Logf("query %d with Redis stalled: answered in %.1f ms (redis_timeout 50ms)", i, a.LatencyMS)
	}
	m := metrics(t, p.Query)
	if got := m["sloproxy_cache_breaker_state"]; got != 2 {
		t.Errorf("breaker state after 6 stalled lookups: %v, want 2 (open)", got)
	}
	if got := m[`sloproxy_cache_redis_bypassed_total{op="mget"}`]; got == 0 {
		t.Error("no lookup skipped Redis while the breaker was open")
	}
	srv.Resume()
	if strings.Contains(p.Logs.String(), "\nredis: ") || strings.HasPrefix(p.Logs.String(), "redis: ") {
		t.Errorf("go-redis wrote to standard error in its own format:\n%s", p.Logs)
	}
}

// TestFlightOutlivesItsLeader: two queries for one input share one
// inference; the client of the one that started it goes away while the
// model computes, and the other still gets the model's answer.
func TestFlightOutlivesItsLeader(t *testing.T) {
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	p := testutil.StartProxy(t, proxyConfig(t, "", fmt.Sprintf(`
apps:
  - {name: slow, input_type: float32, slo: 20s, default_output: "-1", models: [slow]}
models:
  - {name: slow, version: "1", input_type: float32, command: [%q, -a, 2s]}
`, costmodel)))
	waitModel(t, p.Query, "slow", `{"input": [0]}`)

	released := sum(metrics(t, p.Query), "sloproxy_batch_release_total")
	const body = `{"input": [1, 2, 3]}`
	leaderCtx, leave := context.WithCancel(context.Background())
	defer leave()
	leaderDone := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(leaderCtx, http.MethodPost, "http://"+p.Query+"/apps/slow/predict", strings.NewReader(body))
		if err != nil {
			leaderDone <- err
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		leaderDone <- err
	}()
	// The leader's inference is at the model once its batch is released.
	testutil.Eventually(t, 10*time.Second, "the leader's query sent to the model", func() bool {
		return sum(metrics(t, p.Query), "sloproxy_batch_release_total") == released+1
	})
	type result struct {
		status int
		a      answer
		err    error
	}
	follower := make(chan result, 1)
	go func() {
		status, a, err := post(&http.Client{Timeout: time.Minute}, p.Query, "slow", body)
		follower <- result{status, a, err}
	}()
	testutil.Eventually(t, 10*time.Second, "the follower waiting on the leader's inference", func() bool {
		return metrics(t, p.Query)["sloproxy_cache_flight_waiters"] == 1
	})
	leave()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("the leader's request: %v, want it cancelled by its client", err)
	}
	r := <-follower
	if r.err != nil || r.status != http.StatusOK || r.a.Default || r.a.Error != "" {
		t.Fatalf("follower: %d %+v %v, want the model's answer", r.status, r.a, r.err)
	}
}
