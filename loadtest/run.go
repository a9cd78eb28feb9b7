package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Options describe a run.
type Options struct {
	// URL is posted Body (JSON) on every request.
	URL  string
	Body []byte
	// Schedule says when requests leave.
	Schedule *Schedule
	// SLO is the latency objective the answers are held to.
	SLO time.Duration
	// MetricsURL is the proxy's /metrics, scraped every second for batch
	// sizes; empty means none.
	MetricsURL string
	// Timeout bounds each request. 0 means 10 s.
	Timeout time.Duration
	// Progress receives a line a second while the run goes on; nil means
	// none. Each line ends in a newline, so that a log file gets one line
	// per second, unless ProgressTerminal is set: then each line starts
	// with a carriage return and overwrites the one before.
	Progress         io.Writer
	ProgressTerminal bool
	// NoCache sends Cache-Control: no-cache with every request, so that
	// the proxy's models answer rather than its prediction cache.
	NoCache bool
	// NewInputs replaces every "{n}" in Body with the request's sequence
	// number (a decimal integer), so that each request carries an input
	// no other did: the prediction cache misses, and it and the proxy's
	// memory of answered queries fill. Body must then hold "{n}".
	NewInputs bool
	// Warmup is sent first, at the schedule's first rate and with its
	// arrivals, and left out of the result: the load generator's
	// connections and the proxy's learned state reach the steady state
	// before anything is measured. 0 means none.
	Warmup time.Duration
}

// Result is what a run measured.
type Result struct {
	URL      string        `json:"url"`
	SLO      time.Duration `json:"slo_ns"`
	Duration time.Duration `json:"duration_ns"`
	Poisson  bool          `json:"poisson"`
	Phases   []Phase       `json:"phases"`

	Sent int `json:"sent"`
	// Model is the answers a model computed; Cache those the proxy's
	// prediction cache gave (its Sloproxy-Source header says cache for
	// every input); Default the default outputs (other than shed); Shed the
	// queries shed (a shed default output, or 429 or 503); Errors every
	// other answer or failure; Late the answers of any kind that came after
	// the SLO. A server that does not send Sloproxy-Source has its outputs
	// counted in Model.
	Model   int `json:"model"`
	Cache   int `json:"cache"`
	Default int `json:"default"`
	Shed    int `json:"shed"`
	Errors  int `json:"errors"`
	Late    int `json:"late"`
	// Attainment is the share of requests answered, in any way but an
	// error, within the SLO; ModelAttainment the share answered with a
	// model's output (computed or from the cache) within the SLO.
	Attainment      float64 `json:"attainment"`
	ModelAttainment float64 `json:"model_attainment"`
	// AdmittedModelAttainment is ModelAttainment among the queries the
	// proxy admitted (every answer but sheds and errors): whether
	// admission kept its promise under overload.
	AdmittedModelAttainment float64 `json:"admitted_model_attainment"`

	// Latency is over every answer but errors; Admitted over those but
	// sheds (model answers and default outputs at the deadline); ShedLatency
	// over the sheds, which should come at once.
	Latency     Percentiles `json:"latency"`
	Admitted    Percentiles `json:"admitted_latency"`
	ShedLatency Percentiles `json:"shed_latency"`
	// ProxyAdmitted is Admitted by the proxy's own clock, each answer's
	// latency_ms (from its handler's start to the answer), and Outside the
	// rest of the client's measure: the way to the proxy and back, through
	// both processes and the kernel, which the proxy cannot see.
	// LateOutside counts the admitted answers late by the client's clock
	// but within the SLO by the proxy's. All three are over the admitted
	// answers that carry latency_ms.
	ProxyAdmitted Percentiles `json:"proxy_admitted_latency"`
	Outside       Percentiles `json:"outside_proxy"`
	LateOutside   int         `json:"late_outside_proxy"`
	// Reasons counts the default outputs' explanations, and ErrorReasons
	// the errors' (the transport's error, or the status and the proxy's
	// message), numbers and durations in them blanked so that alike
	// reasons add up.
	// ReplicaSeconds and Cost are what the proxy's replicas used over the
	// run (after the warm-up), from its sloproxy_replica_seconds_total and
	// sloproxy_cost_total, all model versions; CostPer1k is Cost per 1,000
	// answers a model computed. All are 0 when the proxy reports none.
	ReplicaSeconds float64        `json:"replica_seconds"`
	Cost           float64        `json:"cost"`
	CostPer1k      float64        `json:"cost_per_1k_predictions"`
	Reasons        map[string]int `json:"reasons"`
	ErrorReasons   map[string]int `json:"error_reasons"`
	Seconds        []Second       `json:"seconds"`
}

// Percentiles of the answers' latency.
type Percentiles struct {
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Second is one second of the run: the requests the schedule had due in
// it, however late a loaded client sent them.
type Second struct {
	T       int           `json:"t"`
	Sent    int           `json:"sent"`
	Cache   int           `json:"cache"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Default int           `json:"default"`
	Shed    int           `json:"shed"`
	Errors  int           `json:"errors"`
	Late    int           `json:"late"`
	// MeanBatch is the mean batch size the proxy reported over the
	// second (all model versions), 0 when unknown.
	MeanBatch float64 `json:"mean_batch"`
	// Replicas and Ready are the desired and the ready replicas the proxy
	// reported at the second's end (all model versions), 0 when unknown.
	Replicas float64 `json:"replicas"`
	Ready    float64 `json:"ready"`
	// RSSBytes and HeapBytes are the proxy's resident memory and its live
	// Go heap, what its last collection marked, at the second's end
	// (process_resident_memory_bytes, go_gc_heap_live_bytes), 0 when
	// unknown.
	RSSBytes  float64 `json:"rss_bytes"`
	HeapBytes float64 `json:"heap_bytes"`
}

// answer is what the proxy's body says.
type answer struct {
	Default     bool     `json:"default"`
	Explanation string   `json:"default_explanation"`
	Error       string   `json:"error"`
	LatencyMS   *float64 `json:"latency_ms"`
}

type kind int

const (
	kindModel kind = iota
	kindCache
	kindDefault
	kindShed
	kindError
)

// classify reads one result and says why it is what it is: the default
// output's explanation, or the error. It also returns the latency the
// proxy measured for an answer that says (latency_ms), and -1 for one
// that does not.
func classify(r *vegeta.Result) (kind, string, time.Duration) {
	var a answer
	parsed := json.Unmarshal(r.Body, &a) == nil
	switch {
	case r.Error != "" && r.Code == 0:
		return kindError, r.Error, -1
	case r.Code == http.StatusTooManyRequests || r.Code == http.StatusServiceUnavailable:
		return kindShed, a.Error, -1
	case r.Code != http.StatusOK && parsed && a.Error != "":
		return kindError, fmt.Sprintf("HTTP %d: %s", r.Code, a.Error), -1
	case r.Code != http.StatusOK:
		return kindError, fmt.Sprintf("HTTP %d", r.Code), -1
	case !parsed:
		return kindError, "the answer is not JSON", -1
	}
	proxy := time.Duration(-1)
	if a.LatencyMS != nil && *a.LatencyMS >= 0 {
		proxy = time.Duration(math.Round(*a.LatencyMS * float64(time.Millisecond)))
	}
	switch {
	case !a.Default && fromCache(r.Headers.Get("Sloproxy-Source")):
		return kindCache, "", proxy
	case !a.Default:
		return kindModel, "", proxy
	case strings.HasPrefix(a.Explanation, "shed"):
		return kindShed, a.Explanation, proxy
	}
	return kindDefault, a.Explanation, proxy
}

// fromCache reports whether a Sloproxy-Source header says that every
// answer came from the cache.
func fromCache(source string) bool {
	if source == "" {
		return false
	}
	for s := range strings.SplitSeq(source, ",") {
		if strings.TrimSpace(s) != "cache" {
			return false
		}
	}
	return true
}

// Run sends the schedule's requests and measures the answers. It returns
// when every request is answered or has timed out, or when ctx is done
// (with what was measured so far).
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.NewInputs && !bytes.Contains(opts.Body, []byte(Placeholder)) {
		return nil, fmt.Errorf(`new inputs: the body holds no %[1]s to replace with each request's number, such as '{"input": [%[1]s, 0.5]}'`, Placeholder)
	}
	sched := opts.Schedule
	if err := sched.Validate(); err != nil {
		return nil, err
	}
	if n := sched.Requests(); n == 0 {
		return nil, fmt.Errorf("the schedule sends no request")
	}
	if opts.Warmup < 0 {
		return nil, fmt.Errorf("warm-up %v: must not be negative", opts.Warmup)
	}
	sent := sched
	if opts.Warmup > 0 {
		sent = &Schedule{Phases: append([]Phase{{Duration: opts.Warmup, Rate: sched.Phases[0].Rate}}, sched.Phases...),
			Poisson: sched.Poisson, Seed: sched.Seed}
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(opts.Timeout), vegeta.KeepAlive(true), vegeta.Connections(10000),
		vegeta.MaxBody(64<<10))
	target := vegeta.Target{Method: http.MethodPost, URL: opts.URL, Body: opts.Body,
		Header: http.Header{"Content-Type": []string{"application/json"}}}
	if opts.NoCache {
		target.Header.Set("Cache-Control", "no-cache")
	}
	duration := sched.Duration()
	res := &Result{URL: opts.URL, SLO: opts.SLO, Duration: duration, Poisson: sched.Poisson, Phases: sched.Phases,
		Reasons: map[string]int{}, ErrorReasons: map[string]int{}}
	seconds := int(math.Ceil(duration.Seconds()))
	lat := make([][]time.Duration, seconds)
	sec := make([]Second, seconds)
	var all, admitted, shed, proxyAdmitted, outside []time.Duration

	batches := &batchScraper{url: opts.MetricsURL}
	stopScrape := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex // guards sec and res while the scraper writes MeanBatch

	// What is measured starts after the warm-up.
	start := time.Now().Add(opts.Warmup)
	wg.Go(func() {
		if opts.Warmup > 0 {
			if opts.Progress != nil {
				fmt.Fprintf(opts.Progress, "warming up for %v\n", opts.Warmup)
			}
			select {
			case <-stopScrape:
				return
			case <-time.After(time.Until(start)):
			}
		}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		base := batches.scrape() // the baseline
		for i := 0; ; i++ {
			stopping := false
			select {
			case <-stopScrape:
				stopping = true // the last, partial second
			case <-t.C:
			}
			got := batches.scrape()
			mu.Lock()
			if i < len(sec) {
				sec[i].MeanBatch = got.meanBatch
				sec[i].Replicas, sec[i].Ready = got.desired, got.ready
				sec[i].RSSBytes, sec[i].HeapBytes = got.rss, got.heap
			}
			if got.replicasOK {
				res.ReplicaSeconds, res.Cost = got.replicaSeconds-base.replicaSeconds, got.cost-base.cost
			}
			if stopping {
				mu.Unlock()
				return
			}
			line := progressLine(i+1, res, lat[min(i, seconds-1)], opts.ProgressTerminal)
			mu.Unlock()
			if opts.Progress != nil {
				fmt.Fprint(opts.Progress, line)
			}
		}
	})

	targeter := vegeta.NewStaticTargeter(target)
	if opts.NewInputs {
		targeter = newInputs(target)
	}
	// No duration limit: the schedule stops the attack after its last request.
	results := atk.Attack(targeter, sent, 0, "sloproxy-bench")
	done := ctx.Done()
loop:
	for {
		select {
		case r, ok := <-results:
			if !ok {
				break loop
			}
			// A request belongs to the second the schedule gave it, not to
			// the one a loaded client managed to send it in: warm-up and
			// seconds hold the same requests on every run.
			at := sent.arrival(r.Seq) - opts.Warmup
			if at < 0 {
				continue // warm-up
			}
			k, why, proxy := classify(r)
			i := min(int(at/time.Second), seconds-1)
			mu.Lock()
			res.Sent++
			sec[i].Sent++
			late := r.Latency > opts.SLO
			switch k {
			case kindModel:
				res.Model++
			case kindCache:
				res.Cache++
				sec[i].Cache++
			case kindDefault:
				res.Default++
				sec[i].Default++
				res.Reasons[blankNumbers(why)]++
			case kindShed:
				res.Shed++
				sec[i].Shed++
			case kindError:
				res.Errors++
				sec[i].Errors++
				res.ErrorReasons[blankNumbers(why)]++
			}
			if k != kindError {
				lat[i] = append(lat[i], r.Latency)
				all = append(all, r.Latency)
				if k == kindShed {
					shed = append(shed, r.Latency)
				} else {
					admitted = append(admitted, r.Latency)
					if proxy >= 0 {
						proxyAdmitted = append(proxyAdmitted, proxy)
						outside = append(outside, r.Latency-proxy)
						if late && proxy <= opts.SLO {
							res.LateOutside++
						}
					}
				}
				if late {
					res.Late++
					sec[i].Late++
				} else {
					res.Attainment++
					if k == kindModel || k == kindCache {
						res.ModelAttainment++
					}
				}
			}
			mu.Unlock()
		case <-done:
			atk.Stop()
			done = nil
		}
	}
	close(stopScrape)
	wg.Wait()
	if opts.Progress != nil && opts.ProgressTerminal {
		fmt.Fprintln(opts.Progress) // ends the line the progress overwrote
	}
	if len(admitted) > 0 {
		res.AdmittedModelAttainment = res.ModelAttainment / float64(len(admitted))
	}
	if res.Sent > 0 {
		res.Attainment /= float64(res.Sent)
		res.ModelAttainment /= float64(res.Sent)
	}
	if res.Model > 0 {
		res.CostPer1k = res.Cost / float64(res.Model) * 1000
	}
	res.Latency = percentiles(all)
	res.Admitted = percentiles(admitted)
	res.ShedLatency = percentiles(shed)
	res.ProxyAdmitted = percentiles(proxyAdmitted)
	res.Outside = percentiles(outside)
	for i := range sec {
		p := percentiles(lat[i])
		sec[i].T, sec[i].P50, sec[i].P99 = i, p.P50, p.P99
	}
	res.Seconds = sec
	return res, ctx.Err()
}

// Placeholder is what NewInputs replaces in the body with each request's
// sequence number.
const Placeholder = "{n}"

// newInputs returns a targeter whose every target is t with its body's
// placeholders replaced by the target's sequence number.
func newInputs(t vegeta.Target) vegeta.Targeter {
	var n atomic.Uint64
	placeholder := []byte(Placeholder)
	return func(tgt *vegeta.Target) error {
		*tgt = t
		tgt.Body = bytes.ReplaceAll(t.Body, placeholder, strconv.AppendUint(nil, n.Add(1), 10))
		return nil
	}
}

// MemoryWindow is the span over which Memory takes each of its peaks, so
// that one second's sample, taken anywhere in a collection cycle, does not
// decide the comparison.
const MemoryWindow = 10

// MemoryPeak is the peak of the proxy's resident memory and of its live Go
// heap, in bytes, over the MemoryWindow seconds from second At.
type MemoryPeak struct {
	At        int
	RSS, Heap float64
}

// Memory returns the peaks over the MemoryWindow seconds from the first
// second at or after from in which the proxy reported its memory, and over
// the MemoryWindow seconds that end with the last such second; ok false
// when the run is too short for the two windows to be apart.
func (r *Result) Memory(from int) (first, last MemoryPeak, ok bool) {
	start, end := -1, -1
	for i, s := range r.Seconds {
		if s.RSSBytes == 0 {
			continue
		}
		if start < 0 && i >= from {
			start = i
		}
		end = i
	}
	tail := end - MemoryWindow + 1
	if start < 0 || tail < start+MemoryWindow {
		return MemoryPeak{}, MemoryPeak{}, false
	}
	first.At, last.At = start, tail
	for i, s := range r.Seconds {
		if s.RSSBytes == 0 {
			continue
		}
		if i >= start && i < start+MemoryWindow {
			first.RSS, first.Heap = max(first.RSS, s.RSSBytes), max(first.Heap, s.HeapBytes)
		}
		if i >= tail {
			last.RSS, last.Heap = max(last.RSS, s.RSSBytes), max(last.Heap, s.HeapBytes)
		}
	}
	return first, last, true
}

// progressLine is the progress after t seconds: for a terminal, a line
// that overwrites the one before; else one line of its own.
func progressLine(t int, res *Result, last []time.Duration, terminal bool) string {
	line := fmt.Sprintf("%4ds  sent %d  model %d  cache %d  default %d  shed %d  errors %d  late %d  p99 %v",
		t, res.Sent, res.Model, res.Cache, res.Default, res.Shed, res.Errors, res.Late, percentiles(last).P99.Round(10*time.Microsecond))
	if terminal {
		return "\r" + line + "   "
	}
	return line + "\n"
}

// percentiles of d (sorted in place).
func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(math.Ceil(q*float64(len(d))))-1)] }
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: d[len(d)-1]}
}

// blankNumbers replaces each run of digits (with . and unit letters that
// follow) by "N": "did not answer within 20ms (2 healthy replicas)"
// becomes "did not answer within N (N healthy replicas)".
func blankNumbers(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] >= '0' && s[i] <= '9' {
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || strings.IndexByte("nuµms", s[i]) >= 0) {
				i++
			}
			b.WriteString("N")
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// batchScraper reads the proxy's batch-size histogram, and its replica
// counts and replica-seconds (see scraped).
type batchScraper struct {
	url        string
	sum, count float64
}

// scraped is what one scrape read: the mean batch size since the last
// scrape (0 when unknown); the desired and ready replicas and the
// replica-seconds and cost counters, summed over the model versions the
// proxy reports (package autoscale), ok false when the proxy has none.
type scraped struct {
	meanBatch            float64
	desired, ready       float64
	replicaSeconds, cost float64
	replicasOK           bool
	rss, heap            float64
}

// scrape reads the proxy's /metrics once.
func (s *batchScraper) scrape() scraped {
	var out scraped
	if s.url == "" {
		return out
	}
	client := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := client.Get(s.url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return out
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return out
	}
	sumOf := func(name string) (float64, bool) {
		f, ok := families[name]
		if !ok {
			return 0, false
		}
		var v float64
		for _, m := range f.GetMetric() {
			v += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
		}
		return v, true
	}
	out.desired, out.replicasOK = sumOf("sloproxy_replicas_desired")
	out.ready, _ = sumOf("sloproxy_replicas_ready")
	out.replicaSeconds, _ = sumOf("sloproxy_replica_seconds_total")
	out.cost, _ = sumOf("sloproxy_cost_total")
	out.rss, _ = sumOf("process_resident_memory_bytes")
	out.heap, _ = sumOf("go_gc_heap_live_bytes")
	f, ok := families["sloproxy_batch_size"]
	if !ok {
		return out
	}
	var sum, count float64
	for _, m := range f.GetMetric() {
		sum += m.GetHistogram().GetSampleSum()
		count += float64(m.GetHistogram().GetSampleCount())
	}
	if count > s.count {
		out.meanBatch = (sum - s.sum) / (count - s.count)
	}
	s.sum, s.count = sum, count
	return out
}
