package oipgrpc

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// TestPythonClient runs testdata/test_grpc_client.py, a client nobody here
// wrote the transport of (Debian's grpcio, stubs generated from the
// project's .proto at test time), against the real proxy serving a real
// scikit-learn digits model, one app of it taking its 64 pixels from a
// real redis-server as features and another its middle 16 pixels as a
// named input between two of the request's, then checks that the calls were counted
// with api="grpc".
func TestPythonClient(t *testing.T) {
	testutil.RequirePython(t, "grpc", "grpc_tools", "sklearn", "joblib")
	root := testutil.RepoRoot(t)
	model := filepath.Join(root, "examples", "sklearn", "digits_logreg.joblib")
	m := testutil.StartModel(t, []string{testutil.Python, filepath.Join(root, "examples", "sklearn", "serve.py"),
		"--model", model, "--input-type", "float64", "--name", "digits-logreg"})
	query, grpcAddr, featureStore := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.StartRedis(t)
	pixels := make([]string, 64)
	for i := range pixels {
		pixels[i] = fmt.Sprintf("{name: p%d}", i)
	}
	px := testutil.StartProxy(t, `
listen: `+query+`
admin: {listen: `+testutil.FreeAddr(t)+`, token: secret}
grpc: {listen: `+grpcAddr+`}
apps:
  - {name: digits, input_type: float64, slo: 2s, default_output: "-1", models: [digits-logreg]}
  - name: digits-fx
    input_type: float64
    slo: 2s
    default_output: "-1"
    models: [digits-logreg]
    features: {key: "img:{img}", fields: [`+strings.Join(pixels, ", ")+`], missing: not_found, timeout: 500ms, redis: "`+featureStore+`"}
  - name: digits-split
    input_type: float64
    slo: 2s
    default_output: "-1"
    models: [digits-logreg]
    inputs: [{name: top, size: 24}, {name: middle, size: 16}, {name: bottom, size: 24}]
    features: {key: "img:{img}", fields: [`+strings.Join(pixels[24:40], ", ")+`], missing: not_found, timeout: 500ms, input: middle, redis: "`+featureStore+`"}
models:
  - {name: digits-logreg, version: "1", input_type: float64, runtime: external, addresses: [`+m.Addr+`]}
`)
	testutil.Eventually(t, 30*time.Second, "the proxy ready", func() bool {
		resp, err := http.Get("http://" + px.Query + "/v2/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cmd := exec.Command(testutil.Python, filepath.Join("testdata", "test_grpc_client.py"))
	cmd.Env = append(cmd.Environ(), "SLOPROXY_GRPC="+grpcAddr, "SLOPROXY_REST="+px.Query,
		"SLOPROXY_PROTO_DIR="+filepath.Join(root, "proxy", "oipgrpc", "inferencepb"), "SLOPROXY_FEATURE_REDIS="+featureStore)
	out, err := cmd.CombinedOutput()
	t.Logf("python:\n%s", out)
	if err != nil {
		t.Fatalf("the Python grpcio tests failed: %v", err)
	}
	resp, err := http.Get("http://" + px.Query + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`sloproxy_requests_total{api="grpc",app="digits",model="digits-logreg:1",outcome="ok"}`,
		`sloproxy_requests_total{api="grpc",app="",model="digits-logreg:1",outcome="ok"}`,
		`sloproxy_requests_total{api="grpc",app="digits",model="digits-logreg:1",outcome="default"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
