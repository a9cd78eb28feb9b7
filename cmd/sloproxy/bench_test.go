package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/loadtest"
)

// TestBench runs `sloproxy bench` against a served proxy with the noop
// model, a real process. The 50 requests of its warm-up are left out of
// the result. The SLO is 5 s, far above the noop's latency: the test checks
// what bench reports, and its figures hold on a loaded machine; how fast
// the proxy is, is for the benchmarks (docs/benchmarks.md).
func TestBench(t *testing.T) {
	noop := testutil.BuildGo(t, "./examples/noop")
	s := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
cache: {enabled: false}
apps:
  - {name: echo, input_type: string, slo: 5s, default_output: '"late"', models: [noop]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
`, testutil.FreePort(t), noop))
	waitServed(t, s.query, "echo", `{"input": "x"}`, 30*time.Second)
	plotPath := filepath.Join(t.TempDir(), "r.png")
	res, out, progress := benchJSON(t, "--url", "http://"+s.query+"/apps/echo/predict", "--body", `{"input": "hi"}`,
		"--slo", "5s", "--phases", "1s@100,1s@300", "--arrival", "constant", "--warmup", "500ms", "--plot", plotPath)
	if res.Sent != 400 || res.Model != 400 || res.Errors != 0 || res.Attainment != 1 {
		t.Errorf("sent %d, model %d, errors %d, attainment %v; want 400 answered by the model within the SLO", res.Sent, res.Model, res.Errors, res.Attainment)
	}
	if res.AdmittedModelAttainment != 1 || res.Admitted != res.Latency || res.ShedLatency != (loadtest.Percentiles{}) {
		t.Errorf("admitted attainment %v, admitted latency %+v, shed latency %+v; with nothing shed, want 1, the overall %+v and none",
			res.AdmittedModelAttainment, res.Admitted, res.ShedLatency, res.Latency)
	}
	// The proxy's own measure of each answer is part of the client's.
	if res.ProxyAdmitted.P50 <= 0 || res.ProxyAdmitted.Max > res.Admitted.Max || res.Outside.P50 < 0 || res.LateOutside != 0 {
		t.Errorf("by the proxy's clock %+v, outside it %+v, %d late only outside; want a measure within the client's, none late",
			res.ProxyAdmitted, res.Outside, res.LateOutside)
	}
	if len(res.Seconds) != 2 || res.Seconds[0].Sent != 100 || res.Seconds[1].Sent != 300 {
		t.Errorf("per second: %+v, want 100 then 300 sent", res.Seconds)
	}
	if res.Seconds[1].MeanBatch < 1 {
		t.Errorf("mean batch in the second second %v: the proxy's /metrics was not read", res.Seconds[1].MeanBatch)
	}
	png, err := os.ReadFile(plotPath)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("the plot is not a PNG (%v)", err)
	}
	for _, want := range []string{"sent", "400", "SLO attainment", "p99", "outside the proxy"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if !strings.Contains(progress, "sent ") {
		t.Error("no progress line")
	}
}

// TestBenchUnreachable: a run whose every request fails says why and
// fails.
func TestBenchUnreachable(t *testing.T) {
	var out, errOut bytes.Buffer
	err := runBench([]string{"--url", "http://" + testutil.FreeAddr(t) + "/apps/a/predict", "--body", `{"input": "x"}`,
		"--slo", "20ms", "--rate", "20", "--duration", "500ms", "--metrics", "none"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "every request failed") {
		t.Fatalf("bench against nothing: %v, want an error", err)
	}
	if !strings.Contains(out.String(), "connection refused") {
		t.Errorf("the report does not say why:\n%s", out.String())
	}
}

func TestBenchBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--slo", "20ms", "--rate", "1", "--duration", "1s"}, "url"},
		{[]string{"--url", "http://h/apps/a/predict", "--rate", "1", "--duration", "1s"}, "slo"},
		{[]string{"--url", "ftp://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s"}, "http(s) URL"},
		{[]string{"--url", "http://h/x", "--slo", "20ms"}, "--rate and --duration"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--phases", "1s@1"}, "not both"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--phases", "1s"}, "DURATION@RATE"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--arrival", "bursty"}, "constant or poisson"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--body", "{oops"}, "not valid JSON"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "Inf", "--duration", "1s", "--body", "{}"}, "rate"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--warmup", "-1s"}, "--warmup"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--new-inputs", "--body", `{"input": [1]}`}, "holds no {n}"},
		{[]string{"--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "1s", "--new-inputs", "--body", `{"input": [{n}}`}, "not valid JSON"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := runBench(tt.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("bench %v: %v, want an error about %q", tt.args, err, tt.want)
		}
	}
}

// TestBenchCache runs `sloproxy bench` against the quickstart's digits app
// (the sklearn example, a real process) with one body, as a newcomer does:
// without --no-cache the prediction cache answers nearly all of it and the
// report says so; with --no-cache the model answers every query and the
// proxy's batch sizes are read.
func TestBenchCache(t *testing.T) {
	testutil.RequirePython(t, "sklearn", "joblib")
	s := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: digits, input_type: float64, slo: 2s, default_output: "-1", models: [digits-logreg]}
models:
  - name: digits-logreg
    version: "1"
    input_type: float64
    command: [/usr/bin/python3, examples/sklearn/serve.py, --model, examples/sklearn/digits_logreg.joblib, --input-type, float64]
    batch_size: 16
`, testutil.FreePort(t)))
	waitServed(t, s.query, "digits", `{"input": `+digitZero+`}`, 60*time.Second)
	bench := func(t *testing.T, extra ...string) (loadtest.Result, string, string) {
		t.Helper()
		return benchJSON(t, append([]string{"--url", "http://" + s.query + "/apps/digits/predict", "--body", `{"input": ` + digitZero + `}`,
			"--slo", "2s", "--phases", "2s@100", "--arrival", "constant"}, extra...)...)
	}

	t.Run("one body is answered by the cache and the report says so", func(t *testing.T) {
		res, out, progress := bench(t)
		if res.Sent != 200 || res.Cache*2 <= res.Sent || res.Cache+res.Model != res.Sent {
			t.Errorf("sent %d, model %d, cache %d; want most of 200 from the cache, the rest from the model", res.Sent, res.Model, res.Cache)
		}
		for _, want := range []string{"from the cache", "warning: ", "--no-cache"} {
			if !strings.Contains(out, want) {
				t.Errorf("the report lacks %q", want)
			}
		}
		// The progress went to a buffer, not a terminal: one line per
		// second, no carriage return.
		if strings.Contains(progress, "\r") || !strings.Contains(progress, "s  sent ") || !strings.HasSuffix(progress, "\n") {
			t.Errorf("progress for a non-terminal: %q, want one line per second without \\r", progress)
		}
	})

	t.Run("--no-cache: the model answers every query", func(t *testing.T) {
		res, out, _ := bench(t, "--no-cache")
		if res.Sent != 200 || res.Cache != 0 || res.Model != 200 {
			t.Errorf("sent %d, model %d, cache %d; want 200 from the model, none from the cache", res.Sent, res.Model, res.Cache)
		}
		batches := 0.0
		for _, sec := range res.Seconds {
			batches = max(batches, sec.MeanBatch)
		}
		if batches < 1 {
			t.Errorf("per second %+v: no batch size read; the batch-size panel would be empty", res.Seconds)
		}
		if strings.Contains(out, "warning: ") {
			t.Errorf("a warning without cache answers:\n%s", out)
		}
	})
}

// benchJSON runs bench with args and a --json report, and returns the
// report, what bench printed and its progress lines.
func benchJSON(t *testing.T, args ...string) (loadtest.Result, string, string) {
	t.Helper()
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	var out, errOut bytes.Buffer
	if err := runBench(append(args, "--json", jsonPath), &out, &errOut); err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	t.Logf("report:\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res loadtest.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	return res, out.String(), errOut.String()
}

// TestReportMemory: the proxy's memory is reported for a run that sent new
// inputs and covered both windows, and only then.
func TestReportMemory(t *testing.T) {
	r := &loadtest.Result{Sent: 1, Seconds: make([]loadtest.Second, 40)}
	for i := range r.Seconds {
		r.Seconds[i].RSSBytes, r.Seconds[i].HeapBytes = 40e6, 10e6
	}
	r.Seconds[39].RSSBytes, r.Seconds[39].HeapBytes = 44e6, 12e6
	for _, c := range []struct {
		r         *loadtest.Result
		newInputs bool
		want      string
	}{
		{r, true, "proxy memory           peaks over 10 s from 20 s and from 30 s: RSS 40.0 MB, 44.0 MB (+10.0%); live Go heap 10.0 MB, 12.0 MB (+20.0%)\n"},
		{r, false, ""},
		{&loadtest.Result{Sent: 1, Seconds: r.Seconds[:39]}, true, ""},
	} {
		var out bytes.Buffer
		report(&out, c.r, c.newInputs)
		_, got, _ := strings.Cut(out.String(), "proxy memory")
		if got != "" {
			got = "proxy memory" + got
		}
		if got != c.want {
			t.Errorf("%d seconds, new inputs %v: %q; want %q", len(c.r.Seconds), c.newInputs, got, c.want)
		}
	}
}
