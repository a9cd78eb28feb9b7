package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// recordedName matches a recording rule's name (level:metric:operations);
// exportedName a metric of the proxy's own.
var (
	recordedName = regexp.MustCompile(`\b[a-zA-Z_][a-zA-Z0-9_]*(?::[a-zA-Z0-9_]+)+`)
	exportedName = regexp.MustCompile(`\bsloproxy_[a-zA-Z0-9_]+`)
)

// namesIn returns the recorded names and the proxy metric names expr reads.
func namesIn(expr string) (recorded, exported []string) {
	recorded = recordedName.FindAllString(expr, -1)
	exported = exportedName.FindAllString(recordedName.ReplaceAllString(expr, ""), -1)
	return recorded, exported
}

// docQueries returns the PromQL of docs/operations.md's promql blocks, one
// expression per entry: a line that starts with a space continues the one
// above; # lines are comments.
func docQueries(t *testing.T) []string {
	t.Helper()
	var out []string
	in := false
	for _, line := range strings.Split(string(readFile(t, filepath.Join("..", "docs", "operations.md"))), "\n") {
		switch {
		case line == "```promql":
			in = true
		case line == "```":
			in = false
		case !in || strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, " ") && len(out) > 0:
			out[len(out)-1] += "\n" + line
		default:
			out = append(out, line)
		}
	}
	return out
}

// panelQueries returns the dashboard's queries with Grafana's variables
// replaced by what they would be for all apps at a short range.
func panelQueries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range readDashboard(t).Panels {
		for _, q := range p.Targets {
			expr := strings.NewReplacer(`$app`, `.*`, `$__rate_interval`, `1m`).Replace(q.Expr)
			out[p.Title+" "+q.RefID] = expr
		}
	}
	return out
}

// proxyConfig is a proxy with one app that an Exp3 policy splits between
// two cost-model versions, and a third model whose process exits at once,
// so that every family the rules and the dashboard read has a series:
// restarts included.
const proxyConfig = `listen: %[1]s
admin:
  listen: %[2]s
runtimes:
  process:
    port_base: %[3]d
apps:
  - name: shop
    input_type: float32
    slo: 100ms
    window: 10m
    default_output: "-1"
    policy: exp3
    models: [cm-a, cm-b]
models:
  - name: cm-a
    version: "1"
    input_type: float32
    command: [%[4]s, --input-type, float32, -a, 2ms, -b, 100us]
  - name: cm-b
    version: "1"
    input_type: float32
    command: [%[4]s, --input-type, float32, -a, 3ms, -b, 100us]
  - name: broken
    version: "1"
    input_type: float32
    command: [/bin/sh, -c, "exit 3"]
`

// A real Prometheus, started with deploy/prometheus's example
// configuration and rules, scrapes a real proxy under load: the recorded
// attainment equals the proxy's own gauge within a percentage point;
// every recording rule, every dashboard query and every documented query
// parses and reads only names the proxy exports or the rules record; the
// recording rules and the dashboard's queries return series; the alerts
// the load and the broken model call for, and only those, are pending.
func TestRealPrometheusScrapesRealProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cm := testutil.BuildGo(t, "./examples/costmodel")
	proxy := testutil.StartProxy(t, fmt.Sprintf(proxyConfig, testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreePort(t), cm))
	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + proxy.Query

	// The example configuration, scraping this proxy every second.
	var cfg map[string]any
	if err := yaml.Unmarshal(readFile(t, filepath.Join("prometheus", "prometheus.yml")), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	job := cfg["scrape_configs"].([]any)[0].(map[string]any)
	job["static_configs"] = []any{map[string]any{"targets": []string{proxy.Query}}}
	promYAML, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, name := range ruleFiles {
		files[name] = string(readFile(t, filepath.Join("prometheus", name)))
	}
	prom := testutil.StartPrometheus(t, string(promYAML), files)
	query := func(expr string) []testutil.Sample {
		t.Helper()
		s, err := prom.Query(ctx, expr)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testutil.Eventually(t, 2*time.Minute, what, cond)
	}

	// One query answered by a model, and Prometheus holding its counters,
	// before the load: rate() counts what happens after a series' first
	// sample.
	inputs := make([]string, 16)
	for i := range inputs {
		inputs[i] = fmt.Sprintf(`{"input": [%d, 1, 2, 3]}`, i)
	}
	waitFor("a query answered by a model", func() bool {
		a, err := predict(client, base, `{"input": [100, 1, 2, 3]}`, "")
		if err != nil {
			t.Fatal(err)
		}
		return a.Model != "" && !a.Default
	})
	waitFor("Prometheus scraped the SLO counters", func() bool {
		return len(query(`sloproxy_slo_queries_total{app="shop"}`)) == 1
	})

	// The load: every fourth query gives itself 1 ms, which no batch of
	// the cost models meets, with an input of its own, so that the cache
	// cannot answer it and admission sheds it (or it misses); the other
	// inputs repeat, so the cache hits.
	const queries, workers = 400, 8
	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < queries; i += workers {
				timeout, input := "", inputs[i%len(inputs)]
				if i%4 == 0 {
					timeout, input = "1ms", fmt.Sprintf(`{"input": [%d, 0, 0, 0]}`, 1000+i)
				}
				a, err := predict(client, base, input, timeout)
				if err != nil {
					t.Error(err)
					return
				}
				if a.Model != "" && !a.Default {
					mu.Lock()
					ids = append(ids, a.QueryID)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, id := range ids[:min(len(ids), 20)] {
		resp, err := client.Post(base+"/apps/shop/feedback", "application/json", strings.NewReader(fmt.Sprintf(`{"query_id": %q, "label": 0}`, id)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("feedback: %s: %s", resp.Status, body)
		}
	}

	// The proxy's own figures, now that the load is over.
	families := scrape(t, client, base+"/metrics")
	gauge := value(t, families, "sloproxy_slo_attainment", "shop")
	total := value(t, families, "sloproxy_slo_queries_total", "shop")
	within := value(t, families, "sloproxy_slo_queries_within_total", "shop")

	// Prometheus's: once it has scraped the final counts and evaluated
	// the rules after that scrape.
	var scraped float64
	waitFor("Prometheus scraped the final counts", func() bool {
		s := query(`sloproxy_slo_queries_total{app="shop"}`)
		if len(s) == 1 && s[0].Value == total {
			scraped = query(`timestamp(sloproxy_slo_queries_total{app="shop"})`)[0].Value
			return true
		}
		return false
	})
	waitFor("the rules evaluated after that scrape", func() bool {
		s := query(`timestamp(app:sloproxy_slo_attainment:ratio_rate5m{app="shop"})`)
		return len(s) == 1 && s[0].Value > scraped
	})
	recorded := query(`app:sloproxy_slo_attainment:ratio_rate5m{app="shop"}`)[0].Value
	burn := query(`app:sloproxy_slo_burn_rate:ratio_rate5m{app="shop"}`)[0].Value
	gaugeBurn := value(t, families, "sloproxy_slo_error_budget_burn_rate", "shop")
	t.Logf("app shop: %v answers, %v within the SLO; attainment: proxy gauge %.4f, counters %.4f, Prometheus's 5m recording rule %.4f; burn rate: proxy %.2f, recording rule %.2f",
		total, within, gauge, within/total, recorded, gaugeBurn, burn)
	if math.Abs(recorded-gauge) > 0.01 {
		t.Errorf("recorded attainment %.4f, the proxy's gauge %.4f: more than a percentage point apart", recorded, gauge)
	}
	if gauge > 0.95 || gauge < 0.5 {
		t.Errorf("attainment %.4f: the load was meant to miss about a quarter of the queries", gauge)
	}

	// Names: everything the rules, the dashboard and the docs read is
	// exported by the proxy or recorded by the rules.
	families = scrape(t, client, base+"/metrics")
	recordedNames := map[string]bool{}
	var exprs []string
	for _, name := range ruleFiles {
		for _, g := range readRules(t, name).Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					recordedNames[r.Record] = true
				}
				exprs = append(exprs, r.Expr)
			}
		}
	}
	panels := panelQueries(t)
	docs := docQueries(t)
	if len(docs) == 0 {
		t.Error("found no promql blocks in docs/operations.md")
	}
	exprs = append(append(exprs, docs...), slices.Collect(maps.Values(panels))...)
	for _, expr := range exprs {
		rec, exp := namesIn(expr)
		for _, n := range rec {
			if !recordedNames[n] {
				t.Errorf("%q reads %s, which no rule records", expr, n)
			}
		}
		for _, n := range exp {
			if !exported(families, n) {
				t.Errorf("%q reads %s, which the proxy does not export", expr, n)
			}
		}
		if _, err := prom.Query(ctx, expr); err != nil {
			t.Errorf("Prometheus refuses it: %v", err)
		}
	}

	// Series: every recording rule and every dashboard query has one, once
	// Prometheus holds two samples of what it reads (a rate needs two).
	hasSeries := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for len(query(expr)) == 0 {
			if time.Now().After(deadline) {
				t.Errorf("%s: %s returns no series\nrules: %s", what, expr, get(t, client, prom.URL+"/api/v1/rules"))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for name := range recordedNames {
		hasSeries("recording rule", name)
	}
	for title, expr := range panels {
		hasSeries("dashboard panel "+title, expr)
	}

	// Alerts, through the real rule evaluation: the load missed about a
	// quarter of shop's queries, a burn rate near 25, so its fast and slow
	// burns are pending (every window covers the whole load); the broken
	// model's crash loop and its missing healthy replica are too. Nothing
	// else alerts.
	want := []string{
		`ALERTS{alertname="SloproxySLOFastBurn", app="shop", severity="page"}`,
		`ALERTS{alertname="SloproxySLOSlowBurn", app="shop", severity="ticket"}`,
		`ALERTS{alertname="SloproxyReplicaCrashLooping", model="broken", version="1", severity="ticket"}`,
		`ALERTS{alertname="SloproxyVersionNoHealthyReplica", model="broken", version="1", severity="page"}`,
	}
	for _, expr := range want {
		waitFor(expr, func() bool { return len(query(expr)) == 1 })
	}
	if s := query(`ALERTS unless (` + strings.Join(want, " or ") + `)`); len(s) != 0 {
		t.Errorf("unexpected alerts: %v", s)
	}
}

// answer is the part of a query's answer the test reads.
type answer struct {
	QueryID string `json:"query_id"`
	Model   string `json:"model"`
	Default bool   `json:"default"`
}

// predict sends one query to app shop, with the Sloproxy-Timeout header
// when timeout is set. Every query is answered 200: the app sheds to its
// default output.
func predict(client *http.Client, base, body, timeout string) (answer, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/apps/shop/predict", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if timeout != "" {
		req.Header.Set("Sloproxy-Timeout", timeout)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &a) != nil {
		return answer{}, fmt.Errorf("predict: %s: %s", resp.Status, raw)
	}
	return a, nil
}

// get returns the body at url.
func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// scrape reads the proxy's /metrics.
func scrape(t *testing.T, client *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value is the sample of family name whose app label is app.
func value(t *testing.T, families map[string]*dto.MetricFamily, name, app string) float64 {
	t.Helper()
	f := families[name]
	if f == nil {
		t.Fatalf("the proxy exports no %s", name)
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "app" && l.GetValue() == app {
				switch {
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s has no series of app %q", name, app)
	return 0
}

// exported reports whether name is a family of families or a series of
// one of its histograms or summaries (_bucket, _sum, _count).
func exported(families map[string]*dto.MetricFamily, name string) bool {
	if families[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil {
			return true
		}
	}
	return false
}
