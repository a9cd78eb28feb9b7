package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// LookBinary returns the path of the named binary of Debian's prometheus
// package (prometheus, promtool), failing the test loudly when it is
// missing: ./scripts/test installs the package.
func LookBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testutil: %s not found (%v); run ./scripts/test, which installs it (apt-get install prometheus)", name, err)
	}
	return path
}

// Prometheus is a Prometheus server on 127.0.0.1 with its storage in a
// temporary directory.
type Prometheus struct {
	URL    string // http://127.0.0.1:port
	Logs   *Buffer
	client *http.Client // its idle connections close when the test ends
}

// StartPrometheus writes config to prometheus.yml in a fresh directory,
// beside the files of extra (name to content: rule files the config names
// by relative path), runs Debian's prometheus on it on a free loopback
// port, and waits until it answers ready. The server is killed when the
// test ends; its log is shown if the test failed.
func StartPrometheus(t testing.TB, config string, extra map[string]string) *Prometheus {
	t.Helper()
	bin := LookBinary(t, "prometheus")
	dir := t.TempDir()
	files := map[string]string{"prometheus.yml": config}
	for name, content := range extra {
		files[name] = content
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := FreePort(t)
	p := &Prometheus{URL: "http://127.0.0.1:" + strconv.Itoa(port), Logs: &Buffer{}, client: &http.Client{Transport: &http.Transport{}}}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p.Logs, p.Logs
	cmd.SysProcAttr = diesWithTest()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		p.client.CloseIdleConnections()
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus's log:\n%s", p.Logs)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if resp, err := p.client.Get(p.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready\n%s", p.Logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus was not ready on %s within a minute\n%s", p.URL, p.Logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Sample is one series of an instant query's result.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// Query evaluates expr now through the HTTP API (/api/v1/query) and
// returns the series of its instant vector, or of its scalar as one series
// without labels. A query Prometheus refuses (a parse error) is an error
// naming it.
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: %s: %v", expr, resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", expr, body.ErrorType, body.Error)
	}
	switch body.Data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(body.Data.Result, &vec); err != nil {
			return nil, fmt.Errorf("query %q: %v", expr, err)
		}
		out := make([]Sample, 0, len(vec))
		for _, s := range vec {
			v, err := sampleValue(s.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %v", expr, err)
			}
			out = append(out, Sample{Metric: s.Metric, Value: v})
		}
		return out, nil
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(body.Data.Result, &s); err != nil {
			return nil, fmt.Errorf("query %q: %v", expr, err)
		}
		v, err := sampleValue(s)
		if err != nil {
			return nil, fmt.Errorf("query %q: %v", expr, err)
		}
		return []Sample{{Metric: map[string]string{}, Value: v}}, nil
	default:
		return nil, fmt.Errorf("query %q: result type %q, want a vector or a scalar", expr, body.Data.ResultType)
	}
}

// sampleValue reads the [time, "value"] pair of the HTTP API.
func sampleValue(pair [2]any) (float64, error) {
	s, ok := pair[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", pair[1])
	}
	return strconv.ParseFloat(s, 64)
}
