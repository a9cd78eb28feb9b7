package runtime_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// The desired counts follow the state at scrape time, and restarts count
// per version; a nil Metrics counts nothing and does not panic.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	reg := prometheus.NewRegistry()
	m := runtime.NewMetrics(reg, store)
	for _, mv := range []state.ModelVersion{processVersion("m", "1", 2), processVersion("m", "2", 3)} {
		if err := store.PutVersion(ctx, mv); err != nil {
			t.Fatal(err)
		}
	}
	m.Restarted(runtime.VersionKey{Model: "m", Version: "1"})
	m.Restarted(runtime.VersionKey{Model: "m", Version: "1"})
	(*runtime.Metrics)(nil).Restarted(runtime.VersionKey{Model: "m", Version: "2"})
	want := `
# HELP sloproxy_replica_restarts_total Replicas of a model version that failed (the process exited, the container died or did not become ready) and were started again, on this proxy's runtimes.
# TYPE sloproxy_replica_restarts_total counter
sloproxy_replica_restarts_total{model="m",version="1"} 2
# HELP sloproxy_replicas_desired Replicas the state asks for, per model version (every version, not only the current one, and whichever proxy runs it).
# TYPE sloproxy_replicas_desired gauge
sloproxy_replicas_desired{model="m",version="1"} 2
sloproxy_replicas_desired{model="m",version="2"} 3
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := store.PutVersion(ctx, processVersion("m", "2", 5)); err != nil {
		t.Fatal(err)
	}
	scaled := `
# HELP sloproxy_replicas_desired Replicas the state asks for, per model version (every version, not only the current one, and whichever proxy runs it).
# TYPE sloproxy_replicas_desired gauge
sloproxy_replicas_desired{model="m",version="1"} 2
sloproxy_replicas_desired{model="m",version="2"} 5
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(scaled), "sloproxy_replicas_desired"); err != nil {
		t.Error(err)
	}
}
