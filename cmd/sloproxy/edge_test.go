package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// edgeConfig is a proxy with three apps on real model processes: echo
// (examples/noop, cached), cm (examples/costmodel, 1 ms) and slow
// (examples/costmodel, 2 s a batch, a 10 s SLO); apps and models are
// more list items, extra more top-level keys.
func edgeConfig(t *testing.T, apps, models, extra string) string {
	noop := testutil.BuildGo(t, "./examples/noop")
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	return fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: edge-token}
runtimes: {process: {enabled: true, port_base: %d}}
cache: {enabled: true}
apps:
  - {name: echo, input_type: string, slo: 2s, default_output: '"late"', models: [noop]}
  - {name: cm, input_type: float32, slo: 2s, default_output: "0", models: [cm], no_cache: true}
  - {name: slow, input_type: float32, slo: 10s, default_output: "0", models: [slow], no_cache: true}
%smodels:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
  - {name: cm, version: "1", input_type: float32, command: [%q, -a, 1ms, -b, "0"]}
  - {name: slow, version: "1", input_type: float32, command: [%q, -a, 2s, -b, "0"]}
%s%s`, testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreePort(t), apps, noop, costmodel, costmodel, models, extra)
}

// noRedirects is a client that reports redirects instead of following
// them.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       time.Minute,
}

// waitReady polls GET /v2/health/ready until it answers 200.
func waitReady(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + addr + "/v2/health/ready")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready within %v: %d %s", within, resp.StatusCode, body)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("not ready within %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEdgeHostile sends the real proxy binary, serving real model
// processes, the requests an attacker or a broken client sends: each gets
// a 4xx with a JSON body that names the problem in a few hundred bytes,
// never a panic, a redirect, a wrapped count or an oversized echo.
func TestEdgeHostile(t *testing.T) {
	px := testutil.StartProxy(t, edgeConfig(t, "", "", ""))
	waitReady(t, px.Query, time.Minute)

	long := strings.Repeat("a", 512<<10)
	type edgeCase struct {
		name          string
		admin         bool
		method, path  string
		header        map[string]string
		body          string
		status        int    // the status wanted; 0 means any 4xx
		error         string // a part of the JSON error wanted
		okOutput      string // for a 200: the output wanted
		defaultReason string // for a 200 default output: a part of its explanation
	}
	cases := []edgeCase{
		{name: "shape overflows int64", method: "POST", path: "/v2/models/cm/infer",
			body:   `{"inputs":[{"name":"x","shape":[4,2147483648,2147483648,3],"datatype":"FP32","data":[]}]}`,
			status: 400, error: "elements"},
		{name: "shape wraps to zero", method: "POST", path: "/v2/models/cm/infer",
			body:   `{"inputs":[{"name":"x","shape":[1,2147483648,2147483648,2147483648],"datatype":"FP32","data":[]}]}`,
			status: 400, error: "elements"},
		{name: "shape beyond the body", method: "POST", path: "/v2/models/cm/infer",
			body:   `{"inputs":[{"name":"x","shape":[1,2147483648],"datatype":"FP32","data":[]}]}`,
			status: 400, error: "elements"},
		{name: "dot-dot in a predict path", method: "POST", path: "/apps/x/../echo/predict", body: `{"input": "a"}`},
		{name: "dot-dot in an OIP path", method: "GET", path: "/v2/models/cm/../cm/ready"},
		{name: "encoded slash in a predict path", method: "POST", path: "/apps/echo%2F..%2Fcm/predict", body: `{"input": "a"}`},
		{name: "double slash", method: "POST", path: "//apps//echo/predict", body: `{"input": "a"}`},
		{name: "dot-dot on the admin listener", admin: true, method: "GET", path: "/api/v1/apps/../models"},
		{name: "encoded slash on the admin listener", admin: true, method: "DELETE", path: "/api/v1/apps/echo%2F..%2Fcm"},
		{name: "long app name", method: "POST", path: "/apps/" + long + "/predict", body: `{"input": "a"}`, status: 404, error: "no app named"},
		{name: "long model name", method: "GET", path: "/v2/models/" + long + "/ready", status: 404, error: "no model named"},
		{name: "long path", method: "GET", path: "/" + long, status: 404},
		{name: "long admin name", admin: true, method: "GET", path: "/api/v1/apps/" + long, status: 400},
		{name: "invalid UTF-8 in a string input", method: "POST", path: "/apps/echo/predict",
			body: "{\"input\": \"a\xffb\"}", status: 400, error: "byte 12"},
		{name: "lone surrogate in a string input", method: "POST", path: "/apps/echo/predict",
			body: `{"input": "a\ud800b"}`, status: 400, error: "surrogate"},
		{name: "invalid UTF-8 in an OIP BYTES input", method: "POST", path: "/v2/models/noop/infer",
			body:   "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"\xc3\"]}]}",
			status: 400, error: "UTF-8"},
		{name: "timeout of 100h", method: "POST", path: "/apps/echo/predict", header: map[string]string{"Sloproxy-Timeout": "100h"},
			body: `{"input": "a"}`, status: 400, error: "1h"},
		{name: "timeout of 3601s", method: "POST", path: "/apps/echo/predict", header: map[string]string{"Sloproxy-Timeout": "3601s"},
			body: `{"input": "a"}`, status: 400, error: "1h"},
		{name: "timeout of 1h0m0.001s", method: "POST", path: "/apps/echo/predict", header: map[string]string{"Sloproxy-Timeout": "1h0m0.001s"},
			body: `{"input": "a"}`, status: 400, error: "1h"},
		{name: "timeout of 3600001 ms", method: "POST", path: "/apps/echo/predict", header: map[string]string{"Sloproxy-Timeout": "3600001"},
			body: `{"input": "a"}`, status: 400, error: "1h"},
		{name: "timeout of 1h", method: "POST", path: "/apps/echo/predict", header: map[string]string{"Sloproxy-Timeout": "1h"},
			body: `{"input": "a"}`, status: 200, okOutput: `"a"`},
		{name: "caller's budget names itself", method: "POST", path: "/apps/slow/predict", header: map[string]string{"Sloproxy-Timeout": "50ms"},
			body: `{"input": [1]}`, status: 200, defaultReason: "Sloproxy-Timeout of 50ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := px.Query
			if c.admin {
				addr = px.Admin
			}
			req, err := http.NewRequest(c.method, "http://"+addr+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if c.admin {
				req.Header.Set("Authorization", "Bearer edge-token")
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			shown := raw
			if len(shown) > 300 {
				shown = append(shown[:300:300], "…"...)
			}
			if len(raw) > 1000 {
				t.Errorf("%d-byte answer: names echoed in errors must be clipped: %s", len(raw), shown)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, body %s", ct, shown)
			}
			if c.status == 0 && (resp.StatusCode < 400 || resp.StatusCode > 499) || c.status != 0 && resp.StatusCode != c.status {
				t.Fatalf("status %d, body %s; want %d (0: any 4xx)", resp.StatusCode, shown, c.status)
			}
			if resp.StatusCode == http.StatusOK {
				var a answer
				if err := json.Unmarshal(raw, &a); err != nil {
					t.Fatalf("body %s: %v", shown, err)
				}
				if c.okOutput != "" && (a.Default || !jsonEqual(a.Output, c.okOutput)) {
					t.Errorf("answer %s, want output %s", raw, c.okOutput)
				}
				if c.defaultReason != "" && (!a.Default || !strings.Contains(a.Explanation, c.defaultReason)) {
					t.Errorf("answer %s, want the default output explained with %q", raw, c.defaultReason)
				}
				return
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
				t.Fatalf("status %d, body %s: not a JSON error (%v)", resp.StatusCode, shown, err)
			}
			if !strings.Contains(e.Error, c.error) {
				t.Errorf("error %q, want it to name %q", e.Error, c.error)
			}
		})
	}

	if got := metricValue(t, px.Query, `sloproxy_panics_total{listener="query"}`); got != 0 {
		t.Errorf("sloproxy_panics_total{listener=\"query\"} = %v", got)
	}
}

// metricValue reads one sample from the proxy's /metrics; -1 when it is
// not there.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	v := metric(t, addr, series)
	if v == "" {
		return -1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s %s: %v", series, v, err)
	}
	return f
}

// halfClose sends one request on a raw connection, closes the
// connection's write side at once, and returns the response the proxy
// writes; a response with no status line is an error.
func halfClose(t *testing.T, addr, path, body string) (int, []byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: sloproxy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	raw, err := io.ReadAll(c)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%q: %w", raw, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// TestEdgeHalfClose is a client that closes its side of the connection
// after sending its request, as HTTP/1.0 clients and some scripts do: an
// answer the proxy has when it notices is written; a query it abandons is
// answered with an error and a JSON body, and counted as canceled; never
// an empty 200.
func TestEdgeHalfClose(t *testing.T) {
	px := testutil.StartProxy(t, edgeConfig(t, "", "", ""))
	waitReady(t, px.Query, time.Minute)

	// Filled into the cache, the answer is there the moment the request
	// is read.
	if status, a := predict(t, px.Query, "echo", `{"input": "cached"}`); status != http.StatusOK || a.Default {
		t.Fatalf("filling the cache: %d %+v", status, a)
	}
	for i := range 20 {
		status, body, err := halfClose(t, px.Query, "/apps/echo/predict", `{"input": "cached"}`)
		if err != nil {
			t.Fatalf("cached answer %d: %v", i, err)
		}
		var a answer
		if status != http.StatusOK || json.Unmarshal(body, &a) != nil || !jsonEqual(a.Output, `"cached"`) {
			t.Fatalf("cached answer %d: %d %q, want 200 with the output", i, status, body)
		}
	}

	// The slow model takes 2 s; the proxy notices the closed side long
	// before that and abandons the query.
	before := metricValue(t, px.Query, `sloproxy_requests_total{api="rest",app="slow",model="slow:1",outcome="canceled"}`)
	for i := range 5 {
		status, body, err := halfClose(t, px.Query, "/apps/slow/predict", `{"input": [1]}`)
		if err != nil {
			t.Fatalf("abandoned query %d: %v", i, err)
		}
		var e struct {
			Error   string `json:"error"`
			QueryID string `json:"query_id"`
		}
		if status < 400 || json.Unmarshal(body, &e) != nil || e.Error == "" || e.QueryID == "" {
			t.Fatalf("abandoned query %d: %d %q, want an error status with a JSON error and the query id", i, status, body)
		}
	}
	after := metricValue(t, px.Query, `sloproxy_requests_total{api="rest",app="slow",model="slow:1",outcome="canceled"}`)
	if after-max(before, 0) != 5 {
		t.Errorf("canceled queries counted: %v before, %v after; want 5 more", before, after)
	}
}

// TestEdgeReadiness checks that /v2/health/ready says whether the proxy
// can serve: with one app whose model never starts it answers 503 naming
// that app, until the configuration asks only for any app.
func TestEdgeReadiness(t *testing.T) {
	const broken = "  - {name: broken, input_type: string, slo: 1s, default_output: '\"none\"', models: [never]}\n"
	const never = "  - {name: never, version: \"1\", input_type: string, command: [/bin/sh, -c, \"exit 3\"]}\n"
	ready := func(addr, path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	t.Run("every app", func(t *testing.T) {
		px := testutil.StartProxy(t, edgeConfig(t, broken, never, ""))
		for _, app := range []string{"echo", "cm", "slow"} {
			body := `{"input": [1]}`
			if app == "echo" {
				body = `{"input": "x"}`
			}
			waitServed(t, px.Query, app, body, time.Minute)
		}
		status, body := ready(px.Query, "/v2/health/ready")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "broken") || !json.Valid([]byte(body)) {
			t.Errorf("/v2/health/ready: %d %s; want 503 naming app broken", status, body)
		}
		if status, body := ready(px.Query, "/v2/models/never/ready"); status != http.StatusServiceUnavailable || !json.Valid([]byte(body)) {
			t.Errorf("/v2/models/never/ready: %d %s; want 503", status, body)
		}
		if status, body := ready(px.Query, "/v2/models/noop/ready"); status != http.StatusOK {
			t.Errorf("/v2/models/noop/ready: %d %s; want 200", status, body)
		}
		if status, body := ready(px.Query, "/v2/health/live"); status != http.StatusOK {
			t.Errorf("/v2/health/live: %d %s; want 200", status, body)
		}
	})

	t.Run("any app", func(t *testing.T) {
		px := testutil.StartProxy(t, edgeConfig(t, broken, never, "oip: {readiness: any_app}\n"))
		waitReady(t, px.Query, time.Minute)
		if status, body := ready(px.Query, "/v2/models/never/ready"); status != http.StatusServiceUnavailable {
			t.Errorf("/v2/models/never/ready: %d %s; want 503", status, body)
		}
	})
}
