package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// TestBinaryAutoscales runs the real binary with the cost model as real
// processes, autoscaled between one and two replicas: under load it
// starts the second, and once the load stops it goes back to one, once,
// after its scale-down delay. The model (a = 50 ms, b = 10 ms, SLO 200 ms)
// serves 50 queries a second per replica within the SLO, 40 at the
// target, so a dozen clients need two.
func TestBinaryAutoscales(t *testing.T) {
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: %s}
log: {level: info}
cache: {enabled: false}
runtimes:
  process: {port_base: %d, cost: {replica_hour: 3.6}}
apps:
  - {name: cm, input_type: float32, slo: 200ms, default_output: "null", models: [cm]}
models:
  - name: cm
    version: "1"
    input_type: float32
    command: [%s, --input-type, float32, -a, 50ms, -b, 10ms]
    autoscale: {min: 1, max: 2, scale_down_delay: 2s}
`, testutil.FreeAddr(t), testutil.FreeAddr(t), binaryAdminToken, testutil.FreePort(t), costmodel))
	ac := &admin.Client{BaseURL: "http://" + p.Admin, Token: binaryAdminToken}
	version := func() admin.VersionView {
		m, err := ac.Model(t.Context(), "cm")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.Version("1")
		return v
	}
	url := "http://" + p.Query + "/apps/cm/predict"
	answered := func() bool {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"input": [1, 2, 3, 4]}`))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte(`"default":false`))
	}
	testutil.Eventually(t, 30*time.Second, "the model answers", answered)

	load := testutil.StartClients(12, 40*time.Millisecond, func() { answered() })
	testutil.Eventually(t, 30*time.Second, "two replicas wanted and live under load", func() bool {
		v := version()
		return v.Replicas == 2 && len(v.LiveReplicas) == 2
	})
	load.Stop()
	testutil.Eventually(t, 30*time.Second, "back to one replica once the load stopped", func() bool {
		v := version()
		return v.Replicas == 1 && len(v.LiveReplicas) == 1
	})

	v := version()
	if v.Usage == nil || v.Usage.ReplicaSeconds <= 0 || v.Usage.Cost <= 0 || v.Usage.CostPer1kPredictions == nil {
		t.Fatalf("usage %+v: want replica-seconds, their cost and the cost per 1,000 predictions", v.Usage)
	}
	for series, want := range map[string]string{
		`sloproxy_autoscale_decisions_total{model="cm",reason="idle",version="1"}`: "1",
		`sloproxy_replicas_desired{model="cm",version="1"}`:                        "1",
	} {
		if got := metric(t, p.Query, series); got != want {
			t.Errorf("%s %q, want %s", series, got, want)
		}
	}
	if got := metric(t, p.Query, `sloproxy_cost_per_1k_predictions{model="cm",version="1"}`); got == "" {
		t.Errorf("no sloproxy_cost_per_1k_predictions of cm:1")
	}
	if !strings.Contains(p.Logs.String(), `"autoscale: scaled"`) {
		t.Errorf("no log line of a decision")
	}
}
