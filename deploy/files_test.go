package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// ruleFiles are the rule files of deploy/prometheus, as the example
// configuration names them.
var ruleFiles = []string{"rules.yml", "alerts.yml"}

// rules is the part of a Prometheus rule file the tests read.
type rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T, name string) rules {
	t.Helper()
	var r rules
	if err := yaml.Unmarshal(readFile(t, filepath.Join("prometheus", name)), &r); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(readFile(t, filepath.Join("grafana", "sloproxy.json"))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/sloproxy.json: %v", err)
	}
	return d
}

// The dashboard has what Grafana's provisioning and an operator need: a
// title and uid, a Prometheus data-source variable that every panel and
// query uses (no data source pinned by name), an app variable, and no
// hard-coded instance.
func TestDashboardSchema(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
		t.Errorf("title %q, uid %q, schemaVersion %d: want both set and a current schema", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Name == "datasource" && string(v.Query) != `"prometheus"` {
			t.Errorf("the datasource variable queries %s, want \"prometheus\"", v.Query)
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query through ${datasource}", v.Name)
		}
	}
	if vars["datasource"] != "datasource" || vars["app"] != "query" {
		t.Errorf("variables %v: want datasource (a data-source variable) and app (a query)", vars)
	}
	rows, queries := 0, 0
	for _, p := range d.Panels {
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no grid position", p.Title)
		}
		if p.Type == "row" {
			rows++
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			if q.Expr == "" || q.RefID == "" || q.Datasource == nil || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: a query lacks its expr, refId or ${datasource}", p.Title)
			}
			if strings.Contains(q.Expr, "instance=") || strings.Contains(q.Expr, "job=") {
				t.Errorf("panel %q pins an instance or job: %s", p.Title, q.Expr)
			}
		}
	}
	if want := []string{"SLO", "Latency", "Batching", "Cache", "Replicas", "Selection"}; rows != len(want) {
		t.Errorf("%d rows, want %d: %v", rows, len(want), want)
	}
	t.Logf("%d rows, %d queries", rows, queries)
}

// Every alert has a severity, a summary, a description naming what it is
// about (the app, the model and version, or the proxy) and a runbook
// entry in docs/operations.md under its own name.
func TestAlertsHaveRunbooks(t *testing.T) {
	ops := string(readFile(t, filepath.Join("..", "docs", "operations.md")))
	n := 0
	for _, g := range readRules(t, "alerts.yml").Groups {
		for _, r := range g.Rules {
			n++
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", r.Alert, s)
			}
			desc := r.Annotations["description"]
			if r.Annotations["summary"] == "" || !regexp.MustCompile(`\$labels\.(app|model|instance)`).MatchString(desc) {
				t.Errorf("%s: want a summary and a description naming its app, version or instance; got %q", r.Alert, r.Annotations)
			}
			anchor := strings.ToLower(r.Alert)
			if r.Annotations["runbook_url"] != "docs/operations.md#"+anchor {
				t.Errorf("%s: runbook_url %q, want docs/operations.md#%s", r.Alert, r.Annotations["runbook_url"], anchor)
			}
			if !strings.Contains(ops, "\n#### "+r.Alert+"\n") {
				t.Errorf("docs/operations.md has no runbook heading \"#### %s\"", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("alerts.yml has no alerts")
	}
}
