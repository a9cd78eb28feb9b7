package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRecoverer serves handlers that panic through a real HTTP server: a
// panic before the answer is a JSON 500, logged at error level with the
// stack and counted; one after the status line cuts the connection, also
// counted; http.ErrAbortHandler stays the quiet abort net/http makes it.
func TestRecoverer(t *testing.T) {
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zapcore.DebugLevel)
	rc := NewRecoverer(reg, zap.New(core))
	mux := http.NewServeMux()
	mux.HandleFunc("/before", func(http.ResponseWriter, *http.Request) {
		var shape []int64
		_ = shape[3] // an index out of range, as a parsing bug makes it
	})
	mux.HandleFunc("/after", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"output":`))
		panic("after the status line")
	})
	mux.HandleFunc("/abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	mux.HandleFunc("/fine", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, []byte(`{"ok":true}`)) })
	srv := httptest.NewServer(rc.Wrap("query", mux))
	defer srv.Close()
	counter := rc.panics.WithLabelValues("query")
	// A fresh connection per request: net/http's client retries a GET
	// whose reused connection closed, which would run a handler twice.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	resp, err := client.Get(srv.URL + "/before")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &e) != nil || e.Error == "" {
		t.Fatalf("/before: %d %q %s; want a JSON 500", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	entries := logs.FilterMessageSnippet("panic").AllUntimed()
	if len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel {
		t.Fatalf("log: %+v; want one error line", entries)
	}
	fields := entries[0].ContextMap()
	if stack, _ := fields["stack"].(string); !strings.Contains(stack, "recover_test.go") {
		t.Errorf("stack field %q does not show the panicking handler", stack)
	}
	if got := promtest.ToFloat64(counter); got != 1 {
		t.Errorf("panics counted: %v, want 1", got)
	}

	if resp, err := client.Get(srv.URL + "/after"); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("/after: %d with a whole body; want the connection cut", resp.StatusCode)
		}
	}
	if got := promtest.ToFloat64(counter); got != 2 {
		t.Errorf("panics counted: %v, want 2", got)
	}

	if _, err := client.Get(srv.URL + "/abort"); err == nil {
		t.Errorf("/abort answered; want the connection cut")
	}
	if got := promtest.ToFloat64(counter); got != 2 {
		t.Errorf("panics counted after an abort: %v, want still 2", got)
	}

	resp, err = client.Get(srv.URL + "/fine")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "{\"ok\":true}\n" {
		t.Errorf("/fine: %d %s", resp.StatusCode, body)
	}
}
