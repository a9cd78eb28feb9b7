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
	m, err := scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape is metrics for goroutines other than the test's.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeTextPlain))
	var mfs []*dto.MetricFamily
	for {
		mf := new(dto.MetricFamily)
		if err := dec.Decode(mf); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("/metrics: %w", err)
		}
		mfs = append(mfs, mf)
	}
	samples, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, mfs...)
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	m := make(map[string]float64, len(samples))
	for _, s := range samples {
		m[s.Metric.String()] = float64(s.Value)
	}
	return m, nil
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

// TestRedisStallUnderLoad sends 300 queries a second, each with a new
// input, for 12 s to a proxy with its cache and state in Redis, and stalls
// Redis (SIGSTOP) for 3 s in the middle. Every query gets HTTP 200, and no
// answer leaves the proxy later than its deadline plus 5 ms by the proxy's
// own clock (latency_ms, from the request's arrival: the client's and the
// network's delays are not the proxy's to keep). Once Redis goes on, the
// breaker closes again within 2 s: lookups use Redis again.
func TestRedisStallUnderLoad(t *testing.T) {
	const (
		slo      = 100 * time.Millisecond
		slack    = 5 * time.Millisecond
		rate     = 300
		duration = 12 * time.Second
		pauseAt  = 4500 * time.Millisecond
		stall    = 3 * time.Second
		recovery = 2 * time.Second
	)
	srv := testutil.NewRedisServer(t)
	noop := testutil.BuildGo(t, "./examples/noop")
	p := testutil.StartProxy(t, proxyConfig(t, srv.Addr, fmt.Sprintf(`
cache: {redis_timeout: 20ms}
apps:
  - {name: echo, input_type: string, slo: %v, default_output: '"late"', models: [noop]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
`, slo, noop)))
	waitModel(t, p.Query, "echo", `{"input": "warm"}`)

	results := testutil.LoadNewInputs(p.Query, "echo", rate, duration)

	// The stall, on the attack's clock; then how long the breaker takes
	// to close once Redis goes on.
	recovered := make(chan time.Duration, 1)
	go func() {
		time.Sleep(pauseAt)
		srv.Pause()
		time.Sleep(stall)
		srv.Resume()
		resumed := time.Now()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			m, err := scrape(p.Query)
			if err == nil && m["sloproxy_cache_breaker_state"] == 0 || time.Since(resumed) > 10*time.Second {
				recovered <- time.Since(resumed)
				return
			}
		}
	}()

	var sent, defaults, late int
	var maxLate, maxProxy, maxClient time.Duration
	codes := map[uint16]int{}
	reasons := map[string]int{}
	for r := range results {
		sent++
		codes[r.Code]++
		maxClient = max(maxClient, r.Latency)
		if r.Code != http.StatusOK {
			reasons[fmt.Sprintf("%d %s %.100s", r.Code, r.Error, r.Body)]++
			continue
		}
		var a answer
		if err := json.Unmarshal(r.Body, &a); err != nil {
			reasons[fmt.Sprintf("not an answer: %.100s", r.Body)]++
			continue
		}
		if a.Default {
			defaults++
			reasons["default: "+a.Explanation]++
		}
		proxy := time.Duration(a.LatencyMS * float64(time.Millisecond))
		maxProxy = max(maxProxy, proxy)
		if proxy > slo {
			maxLate = max(maxLate, proxy-slo)
		}
		if proxy > slo+slack {
			late++
		}
	}
	took := <-recovered
	m := metrics(t, p.Query)
	t.Logf("%d queries: %v by status, %d default outputs; slowest answer by the proxy's clock %v (latest %v past the %v SLO), by the client's %v",
		sent, codes, defaults, maxProxy, maxLate, slo, maxClient)
	t.Logf("breaker closed %v after SIGCONT; lookups that skipped Redis: %v, Redis errors: %v, fills dropped: %v",
		took, sum(m, "sloproxy_cache_redis_bypassed_total"), sum(m, "sloproxy_cache_redis_errors_total"), m["sloproxy_cache_fills_dropped_total"])
	if len(reasons) > 0 {
		t.Logf("answers other than the model's: %v", reasons)
	}
	if want := int(rate * duration / time.Second); sent != want {
		t.Errorf("%d queries sent, want %d", sent, want)
	}
	if codes[http.StatusOK] != sent {
		t.Errorf("%d of %d queries answered 200: %v", sent-codes[http.StatusOK], sent, reasons)
	}
	if late > 0 {
		t.Errorf("%d answers later than the deadline plus %v (the latest %v past it)", late, slack, maxLate)
	}
	if sum(m, "sloproxy_cache_redis_bypassed_total") == 0 {
		t.Error("no lookup skipped Redis: the breaker never opened during the stall")
	}
	if took > recovery {
		t.Errorf("the breaker closed %v after Redis went on, want within %v", took, recovery)
	}
}
