package config

import (
	"context"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFullFile(t *testing.T) {
	c, err := Load("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Apps[0].SLO != 50*time.Millisecond || c.Models[0].Replicas != 2 || c.Models[1].Runtime != "external" {
		t.Fatalf("parsed %+v", c)
	}
	if c.Limits.MaxInputBatch != Default.Limits.MaxInputBatch {
		t.Fatalf("defaults not kept under a partial limits block: %+v", c.Limits)
	}
	if c.Models[0].Runtime != "process" {
		t.Fatalf("runtime default: %q", c.Models[0].Runtime)
	}
	if f := c.Feedback; f.Recent != 1000 || !f.Shared || f.SharedTTL != time.Minute {
		t.Fatalf("feedback: %+v; want recent 1000, shared kept true, shared_ttl 1m", f)
	}
	if c.Autoscaler.Enabled || !Default.Autoscaler.Enabled {
		t.Fatalf("autoscaler.enabled %v, default %v; want false as the file says, true by default", c.Autoscaler.Enabled, Default.Autoscaler.Enabled)
	}
	d := c.Runtimes.Docker
	if !d.Enabled || d.Owner != "team-a" || d.DrainTimeout != 2*time.Second {
		t.Fatalf("runtimes.docker: %+v", d)
	}
	want := state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "sloproxy/onnx:3", CPUs: 1.5, MemoryBytes: 512 << 20, GPUs: 1}
	if got := c.Models[2].ModelVersion().Runtime; !reflect.DeepEqual(got, want) {
		t.Fatalf("docker model's runtime: %+v, want %+v", got, want)
	}
}

func TestSelections(t *testing.T) {
	c, err := Load("testdata/selection.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Selections()
	if s := got["digits"]; s.Policy != "exp3" || s.Eta != 0.2 || s.Shadow != "candidate" || s.Seed != 7 {
		t.Errorf("digits: %+v", s)
	}
	if s := got["price"]; s.Output != selection.Number {
		t.Errorf("price: %+v", s)
	}
	want := selection.Guard{Canary: "knn:2", Window: time.Minute, MinQueries: 50, MinAttainment: 0.95, MaxErrorRate: 0.01}
	if s := got["rollout"]; s.Guard != want || s.Shares["knn:2"] != 0.1 {
		t.Errorf("rollout: %+v", s)
	}
}

func TestInputLayout(t *testing.T) {
	c, err := Load("testdata/features-input.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []state.InputPart{{Name: "query", Size: 4}, {Name: "user_features", Size: 2}}
	if got := c.Apps[0].App().Inputs; !reflect.DeepEqual(got, want) {
		t.Errorf("inputs %+v; want %+v", got, want)
	}
	if got := c.Features()["ranker"].Input; got != "user_features" {
		t.Errorf("features.input %q; want user_features", got)
	}
}

func TestSLOPolicies(t *testing.T) {
	c, err := Load("testdata/slo-policy.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Policies()
	want := map[string]slo.Policy{
		"checkout": {Objective: 0.995, Window: 10 * time.Minute, Shed: slo.ShedReject, RetryAfter: 2 * time.Second, RequestPriority: true,
			Batching: slo.Batching{Controller: slo.ControllerAIMD, Size: 16, Quantile: 0.99, Decrease: 0.8, Admission: true}},
		"batchjobs": {Objective: 0.99, Window: 5 * time.Minute, Shed: slo.ShedUnavailable, RetryAfter: time.Second,
			Batching: slo.Batching{Controller: slo.ControllerAIMD, Size: 16, Quantile: 0.99, Decrease: 0.8, Admission: true}},
		"minimal": slo.DefaultPolicy,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("policies:\n got %+v\nwant %+v", got, want)
	}
}

func TestBadFiles(t *testing.T) {
	t.Setenv("SLOPROXY_RPC_KEY", "") // swarm-without-key has none from the environment either
	tests := map[string]string{
		"unknown-field.bad.yml":              "field default_ouptut not found",
		"features-input-size.bad.yml":        `apps[0].features.input "user_features" holds 3 values, and features.fields lists 2`,
		"inputs-bytes.bad.yml":               `apps[0]: invalid: app "ranker": inputs: an input of type bytes has no layout`,
		"unknown-model.bad.yml":              `apps[0].models[0]: model "missing" is not defined under models`,
		"type-mismatch.bad.yml":              `apps[0].models[0]: model "m" takes float64 but app "a" takes float32`,
		"no-slo.bad.yml":                     "apps[0]: invalid: app \"a\": slo_ms 0: must be positive",
		"bad-name.bad.yml":                   "models[0]: invalid: model \"Bad Name\": name: must match",
		"process-without-command.bad.yml":    "models[0]:",
		"bad-log-format.bad.yml":             `log.format "xml": must be json or console`,
		"bad-cache-ttl.bad.yml":              `apps[0]: invalid: app "a": cache_ttl_s -1: must be between 0`,
		"bad-cache-bytes.bad.yml":            "cache.l1_bytes 0: must be positive",
		"bad-log-level.bad.yml":              `log.level "verbose": must be debug, info, warn or error`,
		"bad-port-base.bad.yml":              "runtimes.process.port_base 70000: must be a port, 1 to 65535",
		"bad-docker-drain.bad.yml":           "runtimes.docker: start_timeout 0s, drain_timeout -1s: must not be negative",
		"slo-bad-shed.bad.yml":               `apps[0].shed "drop": must be default, reject or unavailable`,
		"slo-bad-objective.bad.yml":          "apps[0].objective 1: must be above 0 and below 1",
		"slo-bad-window.bad.yml":             "apps[0].window 10ms: must be at least 1s",
		"slo-static-without-size.bad.yml":    "apps[0].batching.size 0: static needs a positive batch size",
		"slo-size-above-model.bad.yml":       `apps[0].batching.size 64: above the batch size 16 of model "m" (models[0])`,
		"slo-bad-controller.bad.yml":         `apps[0].batching.controller "pid": must be off, static, aimd or latency_model`,
		"slo-bad-quantile.bad.yml":           "apps[0].batching.quantile 0.3: must be above 0.5 and below 1",
		"slo-batching-conflict.bad.yml":      `apps[1].batching: model "m" is also linked to app "a", whose batching differs`,
		"slo-retry-after-default.bad.yml":    "apps[0].retry_after 2s: only reject and unavailable answers carry Retry-After, and shed is default",
		"bad-feedback-ttl.bad.yml":           "feedback.shared_ttl -1m0s: must be positive",
		"bad-feedback-recent.bad.yml":        "feedback.shared_recent 0: must be positive",
		"bad-oip-readiness.bad.yml":          `oip.readiness "some_apps": must be every_app or any_app`,
		"selection-bad-policy.bad.yml":       `apps[0].selection: policy "ucb": must be single, weighted, exp3 or exp4`,
		"selection-unlinked-share.bad.yml":   `apps[0].selection: shares["other:2"]: model not in the app's models`,
		"replicas-above-limit.bad.yml":       `models[0]: model "m" version "1": replicas 5: above limits.max_replicas (4)`,
		"redis-addr-and-addrs.bad.yml":       "redis.addrs: set redis.addr or redis.addrs, not both",
		"redis-several-addrs.bad.yml":        "redis.addrs: 2 addresses need master_name (the Sentinels of a master) or cluster: true",
		"redis-sentinel-and-cluster.bad.yml": "redis.master_name: a Sentinel's master name and cluster: true exclude each other",
		"redis-cluster-db.bad.yml":           "redis.db 1: a Cluster has only database 0",
		"redis-bad-addr.bad.yml":             `redis.addrs[1] "nope": must be host:port`,
		"redis-tls-ca.bad.yml":               "redis.tls.ca_file: open testdata/missing-ca.pem",
		"redis-sentinel-no-addrs.bad.yml":    "redis.addrs: a Sentinel group or a Cluster needs the addresses",
		"swarm-without-key.bad.yml":          "runtimes.swarm.rpc_key: required when the swarm runtime is enabled",
		"features-bad-missing.bad.yml":       `apps[0].features.missing "sometimes"; use use_defaults, not_found or default_output`,
		"features-no-redis.bad.yml":          "apps[0].features.redis: empty, and no redis (addr or addrs) is configured",
		"autoscale-min-above-max.bad.yml":    `models[0]: invalid: model "m" version "1": autoscale.max 2: must be at least autoscale.min (3)`,
		"autoscale-target.bad.yml":           `models[0]: invalid: model "m" version "1": autoscale.target 1.5: must be in (0, 1]`,
		"autoscale-negative-delay.bad.yml":   `models[0]: invalid: model "m" version "1": autoscale.scale_down_delay -5s: must be between 0`,
		"autoscale-max-above-limit.bad.yml":  `models[0]: model "m" version "1": autoscale.max 8: above limits.max_replicas (4)`,
		"cost-negative.bad.yml":              "runtimes.process.cost.replica_hour -0.5: must not be negative",
		"model-cost-negative.bad.yml":        "models[0].cost.replica_hour -2: must not be negative",
	}
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) != len(tests) {
		t.Fatalf("%d bad files, %d expectations", len(files), len(tests))
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", name))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
		})
	}
}

func TestAdminTokenFromEnv(t *testing.T) {
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "from-env")
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken() != "from-env" {
		t.Fatalf("token %q", c.AdminToken())
	}
}

// TestAutoscaleAndCost: the autoscale block reaches the state's version
// with its defaults (a target of 0 is the default, as the admin API
// reads it), and the prices apply by runtime with the model's
// overriding.
func TestAutoscaleAndCost(t *testing.T) {
	c, err := Load("testdata/autoscale.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	got := []*state.Autoscale{c.Models[0].ModelVersion().Autoscale, c.Models[1].ModelVersion().Autoscale}
	want := []*state.Autoscale{{Min: 1, Max: 4, Target: 0.8, ScaleDownDelay: 20 * time.Second}, {Min: 1, Max: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("autoscale %+v %+v, want %+v %+v", got[0], got[1], want[0], want[1])
	}
	if target := got[1].TargetOrDefault(); target != state.DefaultTarget {
		t.Fatalf("target %v from target: 0, want the default %v", target, state.DefaultTarget)
	}
	p := c.Pricing()
	for _, tc := range []struct {
		mv   state.ModelVersion
		want float64
	}{
		{c.Models[0].ModelVersion(), 0.05},
		{c.Models[1].ModelVersion(), 2.5},
		{state.ModelVersion{Model: "other", Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker}}, 0.12},
		{state.ModelVersion{Model: "other", Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal}}, 0},
	} {
		if got := p.Price(tc.mv); got != tc.want {
			t.Errorf("price of %s on %s: %v, want %v", tc.mv.Model, tc.mv.Runtime.Kind, got, tc.want)
		}
	}
}

// TestSeedKeepsTheState: a restart must not undo what operators changed
// in the shared state since the proxy first started from the file.
func TestSeedKeepsTheState(t *testing.T) {
	ctx := context.Background()
	c, err := Parse([]byte(`
apps:
  - {name: a, input_type: float32, slo: 20ms, models: [m]}
models:
  - {name: m, version: "1", input_type: float32, command: [/bin/m]}
`))
	if err != nil {
		t.Fatal(err)
	}
	store := state.NewStore(nil, state.Options{})
	if kept, err := c.Seed(ctx, store); err != nil || len(kept) != 0 {
		t.Fatalf("first seed: kept %v, %v", kept, err)
	}
	snap := store.Snapshot()
	if mv, ok := snap.Current("m"); !ok || mv.Version != "1" {
		t.Fatalf("m's current version after the first seed: %+v %v", mv, ok)
	}
	if models := snap.ModelsOf("a"); len(models) != 1 || models[0] != "m" {
		t.Fatalf("a's links after the first seed: %v", models)
	}

	// An operator deploys version 2, makes it current, and changes the SLO.
	v2 := c.Models[0].ModelVersion()
	v2.Version = "2"
	app := c.Apps[0].App()
	app.SLO = 80 * time.Millisecond
	for _, err := range []error{store.PutVersion(ctx, v2), store.SetCurrent(ctx, "m", "2"), store.PutApp(ctx, app)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	kept, err := c.Seed(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"model m version 1", "app a"}; !slices.Equal(kept, want) {
		t.Errorf("kept %v, want %v", kept, want)
	}
	snap = store.Snapshot()
	if mv, _ := snap.Current("m"); mv.Version != "2" {
		t.Errorf("the restart rolled m back to version %s", mv.Version)
	}
	if a, _ := snap.App("a"); a.SLO != 80*time.Millisecond {
		t.Errorf("the restart reset a's SLO to %v", a.SLO)
	}
}

// TestDefaultsAreSafe: an empty file keeps the query listener on loopback
// and bounds the replica count.
func TestDefaultsAreSafe(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1337" {
		t.Errorf("listen defaults to %q, want 127.0.0.1:1337", c.Listen)
	}
	if c.Limits.MaxReplicas != 32 {
		t.Errorf("limits.max_replicas defaults to %d, want 32", c.Limits.MaxReplicas)
	}
}
