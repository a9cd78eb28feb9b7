package autoscale

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the autoscaler's Prometheus metrics: its decisions, by
// reason, and, read from the autoscaler when Prometheus scrapes, each
// version's ready replicas, replica-seconds, cost and cost per 1,000
// predictions. runtime.Metrics exports the desired count
// (sloproxy_replicas_desired).
type Metrics struct {
	decisions *prometheus.CounterVec

	mu sync.Mutex  // guards a
	a  *Autoscaler // read at scrape time; nil until New
}

var (
	readyDesc = prometheus.NewDesc("sloproxy_replicas_ready",
		"Replicas of a model version that take work on this proxy (healthy in its dispatcher).",
		[]string{"model", "version"}, nil)
	replicaSecondsDesc = prometheus.NewDesc("sloproxy_replica_seconds_total",
		"The desired replica count of a model version integrated over time, since this proxy first saw the version.",
		[]string{"model", "version"}, nil)
	costDesc = prometheus.NewDesc("sloproxy_cost_total",
		"The replica-seconds of a model version at its price per replica-hour (cost.replica_hour), since this proxy first saw the version.",
		[]string{"model", "version"}, nil)
	costPer1kDesc = prometheus.NewDesc("sloproxy_cost_per_1k_predictions",
		"The cost of a model version's replicas over the last cost window (5 minutes) per 1,000 queries its replicas answered through this proxy in it; absent while it answered none.",
		[]string{"model", "version"}, nil)
)

// NewMetrics registers the autoscaler's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_autoscale_decisions_total",
		Help: "Replica counts the autoscaler set, by why: demand (the demand needed more), shed (admission shed with every replica ready), idle (fewer sufficed for the scale-down delay), bounds (the count was outside min and max).",
	}, []string{"model", "version", "reason"})}
	reg.MustRegister(m.decisions, m)
	return m
}

// watch makes m read a's versions at scrape time; nil m does nothing.
func (m *Metrics) watch(a *Autoscaler) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.a = a
}

// decided counts one decision.
func (m *Metrics) decided(k key, why Reason) {
	if m != nil {
		m.decisions.WithLabelValues(k.model, k.version, string(why)).Inc()
	}
}

// forget drops the decision counts of a version no longer in the state.
func (m *Metrics) forget(k key) {
	if m != nil {
		m.decisions.DeletePartialMatch(prometheus.Labels{"model": k.model, "version": k.version})
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- replicaSecondsDesc
	ch <- costDesc
	ch <- costPer1kDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	a := m.a
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.versions {
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, float64(v.last.Ready), k.model, k.version)
		ch <- prometheus.MustNewConstMetric(replicaSecondsDesc, prometheus.CounterValue, v.usage.ReplicaSeconds, k.model, k.version)
		ch <- prometheus.MustNewConstMetric(costDesc, prometheus.CounterValue, v.usage.Cost, k.model, k.version)
		if c := v.costPer1k(); !math.IsNaN(c) {
			ch <- prometheus.MustNewConstMetric(costPer1kDesc, prometheus.GaugeValue, c, k.model, k.version)
		}
	}
}
