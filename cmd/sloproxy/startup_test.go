package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/state"
)

// TestWatchStartup: while a model version is not ready the watch logs it,
// its runtime and why it waits; once ready it logs so and returns.
func TestWatchStartup(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	for _, v := range []state.ModelVersion{
		{Model: "noop", Version: "1", InputType: state.InputString, Replicas: 1,
			Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"go", "run", "./noop"}}},
		{Model: "digits", Version: "1", InputType: state.InputFloat64, Replicas: 1,
			Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/usr/bin/python3", "serve.py"}}},
	} {
		must(t, store.PutVersion(ctx, v))
		must(t, store.SetCurrent(ctx, v.Model, v.Version))
	}
	// noop becomes ready at its third readiness check, digits at its first.
	var noopChecks atomic.Int32
	notReady := func(v state.ModelVersion) string {
		if v.Model == "noop" && noopChecks.Add(1) < 3 {
			return "model noop version 1 has no healthy replica"
		}
		return ""
	}
	core, logs := observer.New(zap.InfoLevel)
	problem := func(model, version string) string { return "" }
	watchStartup(ctx, notReady, store, problem, time.Millisecond, zap.New(core))

	waits := logs.FilterMessageSnippet("waiting for a model").All()
	if len(waits) != 2 {
		t.Fatalf("%d waiting lines, want 2 (noop's first two checks): %v", len(waits), logs.All())
	}
	for _, w := range waits {
		f := w.ContextMap()
		if f["model"] != "noop:1" || f["runtime"] != "process" || !strings.Contains(f["why"].(string), "compiles the model") ||
			f["state"] != "model noop version 1 has no healthy replica" {
			t.Errorf("waiting line %v: want noop:1, its runtime, that go run compiles it and its readiness", f)
		}
	}
	ready := logs.FilterMessage("model ready").All()
	if len(ready) != 1 || ready[0].ContextMap()["model"] != "noop:1" {
		t.Errorf("ready lines %v, want one for noop:1 (digits was ready at once)", ready)
	}
}

func TestWhyWait(t *testing.T) {
	tests := []struct {
		spec state.RuntimeSpec
		want string
	}{
		{state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"go", "run", "./noop"}}, "compiles the model"},
		{state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"./noop"}}, "(./noop) has not answered"},
		{state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "sloproxy/noop"}, "image sloproxy/noop"},
		{state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"10.0.0.1:7000"}}, "10.0.0.1:7000"},
	}
	for _, tt := range tests {
		if got := whyWait(state.ModelVersion{Runtime: tt.spec}); !strings.Contains(got, tt.want) {
			t.Errorf("%+v: %q, want %q in it", tt.spec, got, tt.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
