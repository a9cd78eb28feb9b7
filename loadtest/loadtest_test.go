package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func TestParsePhases(t *testing.T) {
	tests := []struct {
		in   string
		want []Phase
		err  string
	}{
		{"30s@300", []Phase{{30 * time.Second, 300}}, ""},
		{"10s@200, 1s@2000,10s@200", []Phase{{10 * time.Second, 200}, {time.Second, 2000}, {10 * time.Second, 200}}, ""},
		{"5s@0", []Phase{{5 * time.Second, 0}}, ""},
		{"30s", nil, "want DURATION@RATE"},
		{"x@3", nil, "duration"},
		{"-1s@3", nil, "duration"},
		{"1s@fast", nil, "rate"},
		{"1s@-2", nil, "rate"},
		{"1s@NaN", nil, "rate"},
		{"1s@Inf", nil, "rate"},
		{"10s@1e30", nil, "more than"},
	}
	for _, tt := range tests {
		got, err := ParsePhases(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePhases(%q): %v, want an error about %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Fatalf("ParsePhases(%q) = %v, %v", tt.in, got, err)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParsePhases(%q)[%d] = %v, want %v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func TestScheduleConstant(t *testing.T) {
	s := &Schedule{Phases: []Phase{{time.Second, 100}, {time.Second, 0}, {time.Second, 1000}}}
	if n := s.Requests(); n != 1100 {
		t.Fatalf("%d requests, want 100 + 0 + 1000", n)
	}
	// Evenly spaced within a phase, none in the silent one.
	for i, want := range map[int]time.Duration{0: 0, 1: 10 * time.Millisecond, 99: 990 * time.Millisecond, 100: 2 * time.Second, 101: 2*time.Second + time.Millisecond} {
		if wait, stop := s.Pace(0, uint64(i)); stop || wait != want {
			t.Errorf("request %d leaves at %v (stop %v), want %v", i, wait, stop, want)
		}
	}
	if _, stop := s.Pace(3*time.Second, 1100); !stop {
		t.Error("the schedule did not stop after its last request")
	}
	if wait, _ := s.Pace(time.Second, 50); wait != 0 {
		t.Errorf("a request already due waits %v, want 0", wait)
	}
	if r := s.Rate(2500 * time.Millisecond); r != 1000 {
		t.Errorf("Rate at 2.5 s = %v, want 1000", r)
	}
}

func TestSchedulePoisson(t *testing.T) {
	s := &Schedule{Phases: []Phase{{100 * time.Second, 500}}, Poisson: true, Seed: 9}
	n := s.Requests()
	// 50,000 expected; the standard deviation of the count is about 224.
	if math.Abs(float64(n)-50000) > 1000 {
		t.Fatalf("%d Poisson arrivals at 500/s over 100 s, want about 50,000", n)
	}
	// The gaps' coefficient of variation is 1 for exponential gaps, 0 for
	// constant spacing.
	var sum, sumSq float64
	for i := 1; i < n; i++ {
		g := float64(s.arrivals[i] - s.arrivals[i-1])
		sum += g
		sumSq += g * g
	}
	mean := sum / float64(n-1)
	cv := math.Sqrt(sumSq/float64(n-1)-mean*mean) / mean
	if cv < 0.95 || cv > 1.05 {
		t.Errorf("coefficient of variation of the gaps %.3f, want about 1", cv)
	}
	again := &Schedule{Phases: s.Phases, Poisson: true, Seed: 9}
	if again.Requests() != n || again.arrivals[n/2] != s.arrivals[n/2] {
		t.Error("the same seed gave another schedule")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		r     vegeta.Result
		want  kind
		proxy time.Duration
	}{
		{"model", vegeta.Result{Code: 200, Body: []byte(`{"output": 3, "default": false, "latency_ms": 1.25}`)}, kindModel, 1250 * time.Microsecond},
		{"model, no latency said", vegeta.Result{Code: 200, Body: []byte(`{"output": 3, "default": false}`)}, kindModel, -1},
		{"model, a latency that cannot be", vegeta.Result{Code: 200, Body: []byte(`{"output": 3, "default": false, "latency_ms": -2}`)}, kindModel, -1},
		{"default", vegeta.Result{Code: 200, Body: []byte(`{"output": -1, "default": true, "default_explanation": "deadline: ...", "latency_ms": 20}`)}, kindDefault, 20 * time.Millisecond},
		{"shed default", vegeta.Result{Code: 200, Body: []byte(`{"default": true, "default_explanation": "shed: would miss SLO", "latency_ms": 0.1}`)}, kindShed, 100 * time.Microsecond},
		{"429", vegeta.Result{Code: http.StatusTooManyRequests}, kindShed, -1},
		{"503", vegeta.Result{Code: http.StatusServiceUnavailable}, kindShed, -1},
		{"400", vegeta.Result{Code: 400, Body: []byte(`{"error": "bad input"}`)}, kindError, -1},
		{"not JSON", vegeta.Result{Code: 200, Body: []byte(`oops`)}, kindError, -1},
		{"connection refused", vegeta.Result{Error: "connection refused"}, kindError, -1},
	}
	for _, tt := range tests {
		if got, _, proxy := classify(&tt.r); got != tt.want || proxy != tt.proxy {
			t.Errorf("%s: %v, proxy's latency %v; want %v, %v", tt.name, got, proxy, tt.want, tt.proxy)
		}
	}
}

func TestBlankNumbers(t *testing.T) {
	in := "deadline: model cost:1 did not answer within the app's SLO of 20ms (2 healthy replicas)"
	want := "deadline: model cost:N did not answer within the app's SLO of N (N healthy replicas)"
	if got := blankNumbers(in); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestPercentiles(t *testing.T) {
	d := make([]time.Duration, 1000)
	for i := range d {
		d[len(d)-1-i] = time.Duration(i+1) * time.Millisecond
	}
	p := percentiles(d)
	if p.P50 != 500*time.Millisecond || p.P99 != 990*time.Millisecond || p.P999 != 999*time.Millisecond || p.Max != time.Second {
		t.Errorf("%+v", p)
	}
	if (percentiles(nil) != Percentiles{}) {
		t.Error("percentiles of nothing are not zero")
	}
}

// TestRunSetsTheProxysMeasureBesideTheClients: against a handler that
// answers after 30 ms and says it took 1 ms (or, for every other query,
// 25 ms), with an SLO of 20 ms, every answer is late by the client's
// clock, half of them within the SLO by the proxy's, and the time outside
// the proxy is the rest of the client's measure.
func TestRunSetsTheProxysMeasureBesideTheClients(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		said := "1"
		if n.Add(1)%2 == 0 {
			said = "25"
		}
		time.Sleep(30 * time.Millisecond)
		fmt.Fprintf(w, `{"output": 1, "default": false, "latency_ms": %s}`, said)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Options{URL: srv.URL, Body: []byte(`{"input": 1}`), SLO: 20 * time.Millisecond,
		Schedule: &Schedule{Phases: []Phase{{time.Second, 20}}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 20 || res.Model != 20 || res.Late != 20 {
		t.Fatalf("sent %d, model %d, late %d; want 20 answered by the model, all late", res.Sent, res.Model, res.Late)
	}
	if res.LateOutside != 10 {
		t.Errorf("%d late by the client's clock alone, want the 10 the proxy said took 1 ms", res.LateOutside)
	}
	if res.ProxyAdmitted.P50 != time.Millisecond || res.ProxyAdmitted.Max != 25*time.Millisecond {
		t.Errorf("by the proxy's clock %+v, want p50 1ms, max 25ms", res.ProxyAdmitted)
	}
	if res.Outside.Max < 29*time.Millisecond || res.Outside.P50 < 5*time.Millisecond {
		t.Errorf("outside the proxy %+v: want the client's 30 ms and more less the proxy's 1 or 25", res.Outside)
	}
}

// TestRunCountsBySchedule: the warm-up's requests are left out and each
// measured request is counted in the second the schedule gave it, so the
// counts are exact whatever the machine's load.
func TestRunCountsBySchedule(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"output": 1, "default": false}`)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Options{URL: srv.URL, Body: []byte(`{"input": 1}`), SLO: time.Second,
		Warmup: 500 * time.Millisecond, Schedule: &Schedule{Phases: []Phase{{time.Second, 20}, {time.Second, 40}}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 60 || len(res.Seconds) != 2 || res.Seconds[0].Sent != 20 || res.Seconds[1].Sent != 40 {
		t.Errorf("sent %d, per second %+v; want 60: 20 then 40, the warm-up's 10 left out", res.Sent, res.Seconds)
	}
}

// TestRunNewInputs: every request's body carries its own number, and the
// memory the server's /metrics reports is kept by second.
func TestRunNewInputs(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /predict", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[string(b)] = true
		mu.Unlock()
		fmt.Fprint(w, `{"output": 1, "default": false}`)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 3e+07\n"+
			"# TYPE go_gc_heap_live_bytes gauge\ngo_gc_heap_live_bytes 8e+06\n")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if _, err := Run(context.Background(), Options{URL: srv.URL + "/predict", Body: []byte(`{"input": [1]}`), NewInputs: true, SLO: time.Second,
		Schedule: &Schedule{Phases: []Phase{{time.Second, 10}}}}); err == nil || !strings.Contains(err.Error(), "holds no {n}") {
		t.Fatalf("a body without {n}: %v", err)
	}
	res, err := Run(context.Background(), Options{URL: srv.URL + "/predict", Body: []byte(`{"input": [{n}, 0.5], "id": "{n}"}`), NewInputs: true,
		SLO: time.Second, MetricsURL: srv.URL + "/metrics", Schedule: &Schedule{Phases: []Phase{{2 * time.Second, 30}}}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if res.Sent != 60 || len(bodies) != 60 || !bodies[`{"input": [7, 0.5], "id": "7"}`] {
		t.Fatalf("sent %d, %d distinct bodies; want 60, each its own number in every {n}", res.Sent, len(bodies))
	}
	if res.Seconds[1].RSSBytes != 3e7 || res.Seconds[1].HeapBytes != 8e6 {
		t.Fatalf("second 1: RSS %v, heap %v; want 30 MB and 8 MB", res.Seconds[1].RSSBytes, res.Seconds[1].HeapBytes)
	}
	if first, last, ok := res.Memory(20); ok {
		t.Fatalf("memory %+v, %+v of a 2 s run; want none, the run being shorter than both windows", first, last)
	}
}

// TestMemoryPeaks: Memory compares the peaks of two windows, the heap's
// rise and fall between collections within each.
func TestMemoryPeaks(t *testing.T) {
	r := &Result{Seconds: make([]Second, 60)}
	for i := range r.Seconds {
		r.Seconds[i].RSSBytes = 50e6 + float64(i)*1e5 // slow growth
		r.Seconds[i].HeapBytes = 20e6 + float64(i%3)*5e6
	}
	r.Seconds[59].RSSBytes = 0 // the last scrape failed
	first, last, ok := r.Memory(20)
	if !ok || first != (MemoryPeak{At: 20, RSS: 50e6 + 29*1e5, Heap: 30e6}) || last != (MemoryPeak{At: 49, RSS: 50e6 + 58*1e5, Heap: 30e6}) {
		t.Fatalf("%+v, %+v (%v)", first, last, ok)
	}
	if _, _, ok := (&Result{Seconds: make([]Second, 5)}).Memory(20); ok {
		t.Fatal("memory from a proxy that reported none")
	}
	if _, last, ok := (&Result{Seconds: r.Seconds[:40]}).Memory(20); !ok || last.At != 30 {
		t.Fatalf("a 40 s run: last window from %d (%v); want 30, just after the first", last.At, ok)
	}
	r.Seconds = r.Seconds[:39] // the last window would start at 29, within the first
	if first, last, ok := r.Memory(20); ok {
		t.Fatalf("%+v, %+v from windows that overlap", first, last)
	}
	r.Seconds = r.Seconds[:9] // nothing reported from second 20
	if first, last, ok := r.Memory(20); ok {
		t.Fatalf("%+v, %+v from a run shorter than 20 s", first, last)
	}
}
