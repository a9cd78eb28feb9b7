package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMethodNotAllowed: a request with the wrong method is answered 405
// with an Allow header and a body that says which method to use.
func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodGet, "/apps/digits/predict", "POST"},
		{http.MethodPut, "/digits/predict", "POST"},
		{http.MethodGet, "/apps/digits/feedback", "POST"},
		{http.MethodPost, "/metrics", "GET"},
		{http.MethodGet, "/v2/models/m/infer", "POST"},
		{http.MethodDelete, "/v2/health/ready", "GET"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, e.srv.URL+tt.path, strings.NewReader("{}"))
		must(t, err)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct{ Error string }
		_ = json.Unmarshal(raw, &body)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow ||
			!strings.Contains(body.Error, "use "+tt.allow) {
			t.Errorf("%s %s: %d, Allow %q, body %s; want 405, Allow %q and a body that says so",
				tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), raw, tt.allow)
		}
	}
}
