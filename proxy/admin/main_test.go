package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "s3cret-admin-token"

// seed fills s with the state every API case starts from:
//
//	app digits (float32, 50ms) linked to model mnist
//	app spam   (string, 20ms), no links
//	model mnist (float32): versions 1 (current, process, one live replica) and 2
//	model echo  (string):  version 1 (external)
func seed(t *testing.T, s *state.Store) {
	t.Helper()
	ctx := t.Context()
	must(t, s.PutApp(ctx, state.App{Name: "digits", InputType: state.InputFloat32, SLO: 50 * time.Millisecond, DefaultOutput: "-1", Priority: 1}))
	must(t, s.PutApp(ctx, state.App{Name: "spam", InputType: state.InputString, SLO: 20 * time.Millisecond}))
	must(t, s.PutVersion(ctx, mnist("1")))
	must(t, s.PutVersion(ctx, mnist("2")))
	must(t, s.PutVersion(ctx, state.ModelVersion{Model: "echo", Version: "1", InputType: state.InputString, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"127.0.0.1:7100"}}}))
	must(t, s.Link(ctx, "digits", "mnist"))
	must(t, s.SetReplicas(ctx, "mnist", "1", []string{"127.0.0.1:7001"}))
}

func mnist(version string) state.ModelVersion {
	return state.ModelVersion{
		Model: "mnist", Version: version, InputType: state.InputFloat32, Replicas: 1, BatchSize: 8,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/bin/mnist", "--version", version}},
	}
}

// startAPI serves the admin API over s until the test ends.
func startAPI(t *testing.T, s *state.Store, opts Options) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(NewHandler(s, opts))
	t.Cleanup(srv.Close)
	return srv
}

// answer is an API answer as a test reads it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errorMessage returns the answer's {"error"} message, failing the test if
// the body is not that shape.
func (a answer) errorMessage(t *testing.T) string {
	t.Helper()
	var eb ErrorBody
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" {
		t.Fatalf("error answer %d is not {\"error\": message}: %v: %s", a.status, err, a.body)
	}
	return eb.Error
}

// decodeInto decodes the answer's body into v, failing the test if it
// holds fields v lacks.
func (a answer) decodeInto(t *testing.T, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, a.body, err)
	}
}

// noAuth, as a request's authorization, sends no Authorization header.
const noAuth = "-"

// call sends one request to srv. auth is the Authorization header; empty
// means the right bearer token, noAuth none.
func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, rd)
	must(t, err)
	switch auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+testToken)
	case noAuth:
	default:
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
