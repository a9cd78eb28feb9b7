package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// postWith sends body with headers and returns the status, the
// Retry-After header and the body.
func (e *env) postWith(path, body string, headers map[string]string) (int, string, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(raw)
}

// slowModel is a costmodel replica whose every batch takes at least 50ms.
func slowModel(t *testing.T) string {
	return testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--input-type", "float32", "-a", "50ms", "-b", "1ms"}).Addr
}

func TestHeadersTightenTheDeadline(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "slow", InputType: state.InputFloat32, SLO: 5 * time.Second, DefaultOutput: "-1", Priority: 1}, "cost", slowModel(t))
	e.proxy.ApplyPolicies(map[string]slo.Policy{"slow": func() slo.Policy { p := slo.DefaultPolicy; p.RequestPriority = true; return p }()})
	tests := []struct {
		name    string
		headers map[string]string
		status  int
		want    string
	}{
		{"no header: the SLO", nil, 200, `"default":false`},
		{"a timeout shorter than a batch", map[string]string{HeaderTimeout: "10ms"}, 200, `"default":true`},
		{"milliseconds", map[string]string{HeaderTimeout: "10"}, 200, `"default":true`},
		{"a longer timeout does not extend the SLO", map[string]string{HeaderTimeout: "1h"}, 200, `"default":false`},
		{"a bad timeout", map[string]string{HeaderTimeout: "soon"}, 400, `header Sloproxy-Timeout \"soon\": must be a duration`},
		{"a negative timeout", map[string]string{HeaderTimeout: "-5ms"}, 400, "must be positive"},
		{"a lower priority", map[string]string{HeaderPriority: "-1"}, 200, `"default":false`},
		{"a priority above the app's", map[string]string{HeaderPriority: "2"}, 400, "above the app's priority 1"},
		{"a priority that is not a number", map[string]string{HeaderPriority: "high"}, 400, "must be an integer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := e.postWith("/apps/slow/predict", `{"input": [1]}`, tc.headers)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("%d %s, want %d with %s", status, body, tc.status, tc.want)
			}
		})
	}
	e.proxy.ApplyPolicies(nil) // the default policy: requests may not set their priority
	status, _, body := e.postWith("/apps/slow/predict", `{"input": [1]}`, map[string]string{HeaderPriority: "0"})
	if status != 400 || !strings.Contains(body, "does not let requests set their priority") {
		t.Fatalf("%d %s, want 400 naming the policy", status, body)
	}
}

func TestShedPolicies(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "slow", InputType: state.InputFloat32, SLO: 300 * time.Millisecond, DefaultOutput: "-1"}, "cost", slowModel(t))
	// One query a batch: of 24 at once only the first few can make it.
	// (With batching, the replica would take all 24 in one batch of 74ms.)
	// The SLO leaves the first query 250ms to spare, for a loaded machine.
	base := slo.DefaultPolicy
	base.Batching.Controller, base.Batching.Size = "static", 1
	e.proxy.ApplyPolicies(map[string]slo.Policy{"slow": base})
	// Admission learns from batches: until one has been answered it
	// admits everything. The policy above reaches the dispatcher in the
	// background, with a new governor: warm up until that one has
	// learned. The subtests change only the shed policy, so what it
	// learned stays.
	testutil.Eventually(t, 10*time.Second, "the governor's fit to learn", func() bool {
		if status, _, body := e.postWith("/apps/slow/predict", `{"input": [1]}`, nil); status != 200 {
			t.Fatalf("warm-up: %d %s", status, body)
		}
		f := e.proxy.pool.fit("cost", "1")
		if f == nil {
			return false
		}
		a, _, _ := f.Params()
		return a > 0
	})
	tests := []struct {
		shed       slo.Shed
		status     int
		retryAfter string
		want       string
	}{
		{slo.ShedDefault, 200, "", `"default":true,"default_explanation":"shed: would miss SLO: model cost:1 predicted to answer in`},
		{slo.ShedReject, 429, "3", `"error":"shed: would miss SLO`},
		{slo.ShedUnavailable, 503, "3", `"error":"shed: would miss SLO`},
	}
	for _, tc := range tests {
		t.Run(string(tc.shed), func(t *testing.T) {
			p := base
			p.Shed, p.RetryAfter = tc.shed, 2500*time.Millisecond
			e.proxy.ApplyPolicies(map[string]slo.Policy{"slow": p})
			// One replica, 51ms a query, 300ms to answer: of 24 queries
			// at once the first ones make it and the rest cannot. They
			// leave together from a barrier, and 24 of them are 1.2s of
			// work: on a loaded machine whose client goroutines start
			// tens of milliseconds apart, some still arrive too late.
			const queries = 24
			type reply struct {
				status      int
				retry, body string
			}
			replies := make(chan reply, queries)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for range queries {
				wg.Go(func() {
					<-start
					s, r, b := e.postWith("/apps/slow/predict", `{"input": [1]}`, nil)
					replies <- reply{s, r, b}
				})
			}
			close(start)
			wg.Wait()
			close(replies)
			var shed, ok int
			for r := range replies {
				switch {
				case strings.Contains(r.body, `"default":false`):
					ok++
				case r.status == tc.status && r.retry == tc.retryAfter && strings.Contains(r.body, tc.want):
					shed++
				case strings.Contains(r.body, `"default_explanation":"deadline`):
					// admitted, and late after all: answered by the default
				default:
					t.Errorf("unexpected answer %d (Retry-After %q) %s", r.status, r.retry, r.body)
				}
			}
			if ok == 0 || shed == 0 {
				t.Fatalf("%d answered by the model, %d shed: want some of each", ok, shed)
			}
			if n := promtest.ToFloat64(e.proxy.metrics.shed.WithLabelValues("slow", string(tc.shed))); int(n) != shed {
				t.Fatalf("sloproxy_shed_total %v, want %d", n, shed)
			}
		})
	}
	// A request to the model through the OIP has no app and no default
	// output: admission's refusal is a 429, counted as a shed of the
	// reject policy's and as the outcome shed, not error.
	t.Run("a model through the OIP", func(t *testing.T) {
		const queries = 24
		statuses := make(chan int, queries)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range queries {
			wg.Go(func() {
				<-start
				s, _ := e.post("/v2/models/cost/infer", `{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}`)
				statuses <- s
			})
		}
		close(start)
		wg.Wait()
		close(statuses)
		shed := 0
		for s := range statuses {
			if s == http.StatusTooManyRequests {
				shed++
			}
		}
		if shed == 0 {
			t.Fatal("no request was shed")
		}
		if n := promtest.ToFloat64(e.proxy.metrics.shed.WithLabelValues("", string(slo.ShedReject))); int(n) != shed {
			t.Errorf("sloproxy_shed_total{app=\"\",policy=\"reject\"} %v, want %d", n, shed)
		}
		if n := promtest.ToFloat64(e.proxy.metrics.requests.WithLabelValues("oip", "", "cost:1", outcomeShed)); int(n) != shed {
			t.Errorf("sloproxy_requests_total{outcome=\"shed\"} %v, want %d", n, shed)
		}
	})
}

// TestParseTimeout checks every form of Sloproxy-Timeout against the
// limits: positive, at most an hour.
func TestParseTimeout(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration // 0: refused
	}{
		{"25ms", 25 * time.Millisecond}, {"1.5s", 1500 * time.Millisecond}, {"25", 25 * time.Millisecond},
		{"0.5", 500 * time.Microsecond}, {"1h", time.Hour}, {"3600s", time.Hour}, {"3600000", time.Hour},
		{"100h", 0}, {"3601s", 0}, {"1h0m0.001s", 0}, {"3600001", 0}, {"1e300", 0}, {"+Inf", 0},
		{"-Inf", 0}, {"NaN", 0}, {"0", 0}, {"-5ms", 0}, {"0s", 0}, {"soon", 0}, {"", 0},
	}
	for _, c := range cases {
		got, err := parseTimeout(c.in)
		if c.want == 0 {
			if err == nil {
				t.Errorf("parseTimeout(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
