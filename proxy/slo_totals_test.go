package proxy

import (
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sloproxy/sloproxy/slo"
)

// The cumulative SLO counters divide to the same attainment as the rolling
// gauge while every answer is inside the window, and both counters of an
// app appear with its first answer.
func TestSLOTotalsMatchTheGauge(t *testing.T) {
	pol := slo.DefaultPolicy
	pol.Objective = 0.9
	at := &attainment{policies: slo.NewTable(map[string]slo.Policy{"a": pol}), apps: map[string]*appSLO{}}
	now := time.Now()
	for i := range 8 {
		at.record("a", now, i%4 != 0) // 6 of 8 within
	}
	at.record("b", now, false)
	want := `
# HELP sloproxy_slo_attainment Fraction of the app's queries over its policy's window answered by a model within the SLO (defaults and errors count as misses); 1 with no queries.
# TYPE sloproxy_slo_attainment gauge
sloproxy_slo_attainment{app="a"} 0.75
sloproxy_slo_attainment{app="b"} 0
# HELP sloproxy_slo_objective The app's objective: the fraction of its queries that must be answered by a model within the SLO.
# TYPE sloproxy_slo_objective gauge
sloproxy_slo_objective{app="a"} 0.9
sloproxy_slo_objective{app="b"} 0.99
# HELP sloproxy_slo_queries_total Queries of the app answered (REST inputs, each of an input_batch counted), for SLO ratios over any window.
# TYPE sloproxy_slo_queries_total counter
sloproxy_slo_queries_total{app="a"} 8
sloproxy_slo_queries_total{app="b"} 1
# HELP sloproxy_slo_queries_within_total Queries of the app answered by a model (or the cache) within the SLO; over sloproxy_slo_queries_total it is the attainment.
# TYPE sloproxy_slo_queries_within_total counter
sloproxy_slo_queries_within_total{app="a"} 6
sloproxy_slo_queries_within_total{app="b"} 0
`
	names := []string{"sloproxy_slo_attainment", "sloproxy_slo_objective", "sloproxy_slo_queries_total", "sloproxy_slo_queries_within_total"}
	if err := promtest.CollectAndCompare(at, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}
