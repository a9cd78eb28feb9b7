package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/profile"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/state"
)

// TestModelsProfileCLI profiles a real cost model process with `models
// profile --inputs`, shows the profile with `models get`, and links a slow
// version to an app whose SLO it misses: refused, then forced.
func TestModelsProfileCLI(t *testing.T) {
	t.Setenv(envAdminURL, "")
	t.Setenv(envAdminToken, "")
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	cm := testutil.StartModel(t, []string{costmodel, "--a", "200ms", "--b", "1ms"})
	store := state.NewStore(nil, state.Options{})
	ctx := t.Context()
	must(t, store.PutApp(ctx, state.App{Name: "fast", InputType: state.InputFloat32, SLO: 50 * time.Millisecond}))
	must(t, store.PutVersion(ctx, state.ModelVersion{Model: "cm", Version: "1", InputType: state.InputFloat32, Replicas: 1, BatchSize: 2,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{cm.Addr}}}))
	must(t, store.SetReplicas(ctx, "cm", "1", []string{cm.Addr}))
	prof := profile.Profiler{Encode: proxy.EncodeInput, DefaultBatch: 8, Options: profile.Options{Warmup: 1}}
	srv := httptest.NewServer(admin.NewHandler(store, admin.Options{Token: cliTestToken, Profiler: prof}))
	t.Cleanup(srv.Close)
	global := []string{"--admin", srv.URL, "--token", cliTestToken}
	inputs := filepath.Join(t.TempDir(), "inputs.jsonl")
	must(t, os.WriteFile(inputs, []byte("[1, 2]\n\n[3, 4.5]\n"), 0o600))

	steps := []struct {
		group   string
		args    []string
		wantOut []string
		wantErr string
	}{
		{"models", []string{"profile", "cm", "1", "--inputs", inputs, "--repeats", "3"},
			[]string{"profile of cm version 1:", "1 replica, input request", "fit:", "BATCH", "P99", "THROUGHPUT/REPLICA", "\n1 ", "\n2 "}, ""},
		{"models", []string{"get", "cm"}, []string{"profile of cm version 1:", "input request"}, ""},
		{"apps", []string{"link", "fast", "cm"}, nil, `cannot meet app "fast"'s SLO of 50ms: its profile's batch 1 line has p99 2`},
		{"apps", []string{"link", "fast", "cm", "--force"}, []string{"app fast uses models: cm"}, ""},
		{"models", []string{"get", "cm"}, []string{"APP", "fast", "50ms", "no (the gate refuses it)"}, ""},
		{"models", []string{"profile", "cm", "1", "--inputs", "/no/such/file"}, nil, "--inputs"},
	}
	for _, s := range steps {
		out, _, err := runCLI(s.group, append(append([]string{}, global...), s.args...)...)
		name := s.group + " " + strings.Join(s.args, " ")
		t.Logf("%s:\n%s", name, out)
		switch {
		case s.wantErr == "" && err != nil:
			t.Fatalf("%s: %v", name, err)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Fatalf("%s: error %v, want one containing %q", name, err, s.wantErr)
		}
		for _, w := range s.wantOut {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q", name, w)
			}
		}
	}
}
