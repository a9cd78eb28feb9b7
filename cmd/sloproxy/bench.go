package main

// `sloproxy bench`: flags and the report over package loadtest, which
// sends the load and measures it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/sloproxy/sloproxy/loadtest"
)

const benchUsage = `usage: sloproxy bench --url URL --slo DURATION (--rate N --duration D | --phases D@N,...) [flags]
       sloproxy bench goodput --out FILE [--bound N] NAME=RUN.json...

Sends an open-loop load of POSTs to URL (a proxy's predict endpoint): requests
leave on schedule whatever the latency of the answers. Prints a progress line
each second, then percentiles, SLO attainment and the answers by kind: from a
model, from the proxy's prediction cache, default outputs, shed, errors; and,
when the proxy reports them, the replica-seconds its replicas used over the
run and their cost per 1,000 answers a model computed (see cost.replica_hour
in docs/operations.md).

A body sent again and again is answered by the cache after the first time, so
the run measures the cache, not the model: use --no-cache, which asks the
proxy to skip its cache (Cache-Control: no-cache), to measure the models.
--new-inputs instead replaces every {n} in the body with the request's number,
so that each request is an input never seen before: the cache misses and
fills, as does the proxy's memory of answered queries, and the run compares the
proxy's resident memory and live Go heap over 10 s from 20 s with its last 10 s
(a run of 40 s or more).

`

// runBench runs `sloproxy bench`.
func runBench(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "goodput" {
		return runGoodput(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	target := fs.String("url", "", "the predict endpoint, such as http://127.0.0.1:1337/apps/digits/predict (required)")
	body := fs.String("body", "", `the JSON body of every request, such as '{"input": [1, 2]}'`)
	bodyFile := fs.String("body-file", "", "read the body from this file instead")
	var slo, duration, timeout, warmup time.Duration
	durationVar(fs, &slo, "slo", 0, "the latency objective answers are held to, a `duration` such as 20ms (required)")
	rate := fs.Float64("rate", 0, "requests per second, with --duration")
	durationVar(fs, &duration, "duration", 0, "how long to send at --rate, a `duration` such as 30s")
	phases := fs.String("phases", "", "a schedule instead of --rate/--duration: DURATION@RATE,... such as 30s@300,30s@900,30s@300 (a step) or 10s@200,1s@2000,10s@200 (a burst)")
	arrival := fs.String("arrival", "poisson", "constant (evenly spaced) or poisson (exponential gaps)")
	seed := fs.Uint64("seed", 1, "the seed of Poisson arrivals")
	metrics := fs.String("metrics", "", "the proxy's /metrics, scraped for batch sizes (default: /metrics on the URL's host; \"none\" for none)")
	durationVar(fs, &timeout, "timeout", 10*time.Second, "how long one request may take before it counts as an error, a `duration`")
	durationVar(fs, &warmup, "warmup", 0, "send this long first, at the first rate, and leave it out of the result; a `duration`")
	jsonOut := fs.String("json", "", "write the result, with its per-second series, as JSON to this file")
	plotOut := fs.String("plot", "", "write a PNG plot of latency, load, batch size and replicas over time to this file")
	noCache := fs.Bool("no-cache", false, "send Cache-Control: no-cache, so that models answer rather than the proxy's prediction cache")
	newInputs := fs.Bool("new-inputs", false, `replace every {n} in the body with the request's number, such as '{"input": [{n}, 0.5]}': each request a new input`)
	if err := fs.Parse(args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := required(fs, "url", "slo"); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want an http(s) URL with a host", *target)
	}
	if slo <= 0 {
		return fmt.Errorf("--slo %v: must be positive", slo)
	}
	if warmup < 0 {
		return fmt.Errorf("--warmup %v: must not be negative", warmup)
	}
	sched := &loadtest.Schedule{Seed: *seed}
	switch *arrival {
	case "poisson":
		sched.Poisson = true
	case "constant":
	default:
		return fmt.Errorf("--arrival %q: want constant or poisson", *arrival)
	}
	switch {
	case *phases != "" && (*rate != 0 || duration != 0):
		return errors.New("give either --phases or --rate with --duration, not both")
	case *phases != "":
		if sched.Phases, err = loadtest.ParsePhases(*phases); err != nil {
			return fmt.Errorf("--phases: %w", err)
		}
	case *rate > 0 && duration > 0:
		sched.Phases = []loadtest.Phase{{Duration: duration, Rate: *rate}}
	default:
		return errors.New("give --rate and --duration (both positive), or --phases")
	}
	if err := sched.Validate(); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	payload := []byte(*body)
	if *bodyFile != "" {
		if payload, err = os.ReadFile(*bodyFile); err != nil {
			return fmt.Errorf("--body-file: %w", err)
		}
	}
	checked := payload
	if *newInputs {
		checked = bytes.ReplaceAll(payload, []byte(loadtest.Placeholder), []byte("1"))
	}
	if !json.Valid(checked) {
		return errors.New("the body (--body or --body-file) is not valid JSON")
	}
	metricsURL := *metrics
	switch metricsURL {
	case "":
		metricsURL = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/metrics"}).String()
	case "none":
		metricsURL = ""
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stderr, "sending %d requests over %v to %s\n", sched.Requests(), sched.Duration(), *target)
	res, err := loadtest.Run(ctx, loadtest.Options{URL: *target, Body: payload, Schedule: sched, SLO: slo,
		MetricsURL: metricsURL, Timeout: timeout, Progress: stderr, ProgressTerminal: isTerminal(stderr),
		Warmup: warmup, NoCache: *noCache, NewInputs: *newInputs})
	if res == nil {
		return err
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "interrupted: the result covers what was sent so far")
	}
	report(stdout, res, *newInputs)
	if *jsonOut != "" {
		raw, jerr := json.MarshalIndent(res, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(*jsonOut, append(raw, '\n'), 0o644)
		}
		if jerr != nil {
			return fmt.Errorf("--json: %w", jerr)
		}
	}
	if *plotOut != "" {
		f, perr := os.Create(*plotOut)
		if perr != nil {
			return fmt.Errorf("--plot: %w", perr)
		}
		title := fmt.Sprintf("%s, SLO %v\nanswers: model %d, cache %d, default %d, shed %d, errors %d",
			*target, slo, res.Model, res.Cache, res.Default, res.Shed, res.Errors)
		if *noCache {
			title += " (--no-cache)"
		}
		perr = res.WritePNG(f, title)
		if cerr := f.Close(); perr == nil {
			perr = cerr
		}
		if perr != nil {
			return fmt.Errorf("--plot: %w", perr)
		}
	}
	if res.Sent > 0 && res.Errors == res.Sent {
		return fmt.Errorf("every request failed (%d); see the errors above", res.Sent)
	}
	return nil
}

// memoryFrom is the second from which the report compares the proxy's
// memory with the run's end: by then the cache and the memory of answered
// queries have had time to fill at a few thousand queries a second.
const memoryFrom = 20

// report prints the result's summary, with the proxy's memory at the
// start and the end of a run that sent new inputs.
func report(w io.Writer, r *loadtest.Result, newInputs bool) {
	line := func(what string, n int) {
		fmt.Fprintf(w, "%-22s %8d  %6.2f%%\n", what, n, 100*float64(n)/float64(max(r.Sent, 1)))
	}
	fmt.Fprintf(w, "%-22s %8d\n", "sent", r.Sent)
	line("answered by a model", r.Model)
	line("from the cache", r.Cache)
	line("default output", r.Default)
	line("shed", r.Shed)
	line("errors", r.Errors)
	line(fmt.Sprintf("late (after %v)", r.SLO), r.Late)
	fmt.Fprintf(w, "%-22s %8.4f  (model or cache answers within the SLO: %.4f)\n", "SLO attainment", r.Attainment, r.ModelAttainment)
	if r.Shed > 0 {
		fmt.Fprintf(w, "%-22s %8.4f  (model answers within the SLO among queries not shed)\n", "admitted attainment", r.AdmittedModelAttainment)
	}
	pct := func(what string, l loadtest.Percentiles) {
		fmt.Fprintf(w, "%-22s p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", what, l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	pct("latency", r.Latency)
	if r.Shed > 0 {
		pct("  not shed", r.Admitted)
		pct("  shed", r.ShedLatency)
	}
	if r.ProxyAdmitted != (loadtest.Percentiles{}) {
		pct("  not shed, proxy", r.ProxyAdmitted)
		pct("  outside the proxy", r.Outside)
		fmt.Fprintf(w, "%-22s %8d  (late here, within the SLO by the proxy's clock)\n", "late outside proxy", r.LateOutside)
	}
	if r.ReplicaSeconds > 0 {
		fmt.Fprintf(w, "%-22s %8.0f  (cost %.6g, per 1,000 model answers %.6g)\n", "replica-seconds", r.ReplicaSeconds, r.Cost, r.CostPer1k)
	}
	if first, last, ok := r.Memory(memoryFrom); newInputs && ok {
		fmt.Fprintf(w, "%-22s peaks over %d s from %d s and from %d s: RSS %.1f MB, %.1f MB (%+.1f%%); live Go heap %.1f MB, %.1f MB (%+.1f%%)\n",
			"proxy memory", loadtest.MemoryWindow, first.At, last.At, first.RSS/1e6, last.RSS/1e6, 100*(last.RSS-first.RSS)/first.RSS,
			first.Heap/1e6, last.Heap/1e6, 100*(last.Heap-first.Heap)/max(first.Heap, 1))
	}
	top(w, "default", r.Reasons)
	top(w, "error", r.ErrorReasons)
	if r.Cache > 0 && r.Cache*2 > r.Sent {
		fmt.Fprintf(w, "warning: %d of %d answers came from the proxy's prediction cache, so this run measured the cache,\n"+
			"not the models; run again with --no-cache (or varied bodies) to measure the models\n", r.Cache, r.Sent)
	}
}

// isTerminal reports whether w is a terminal, where progress lines may
// overwrite each other; a file or pipe gets one line per update.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// top prints the five most common reasons.
func top(w io.Writer, what string, reasons map[string]int) {
	for i, why := range slices.SortedFunc(maps.Keys(reasons), func(a, b string) int { return reasons[b] - reasons[a] }) {
		if i == 5 {
			break
		}
		fmt.Fprintf(w, "  %-7s %8d  %s\n", what, reasons[why], why)
	}
}
