package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// inFlight reads the gauge sloproxy_requests_in_flight from the proxy's
// /metrics on addr: the queries it has received and not yet answered.
func inFlight(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "sloproxy_requests_in_flight "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("sloproxy_requests_in_flight %q: %v", v, err)
			}
			return int(f)
		}
	}
	t.Fatalf("GET /metrics: no sloproxy_requests_in_flight in\n%s", raw)
	return 0
}
