package runtime

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the runtimes' Prometheus metrics: the replicas each version
// should have, and how often the runtimes replaced a replica that failed.
// The dispatcher's sloproxy_replica_healthy says how many answer.
type Metrics struct {
	restarts *prometheus.CounterVec
	desired  desiredReplicas
}

// NewMetrics registers the runtime metrics with reg: a restart counter the
// runtimes report to through Restarted, and the desired replica count of
// every version in store's snapshot, read when Prometheus scrapes.
func NewMetrics(reg prometheus.Registerer, store Store) *Metrics {
	m := &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_replica_restarts_total",
			Help: "Replicas of a model version that failed (the process exited, the container died or did not become ready) and were started again, on this proxy's runtimes.",
		}, []string{"model", "version"}),
		desired: desiredReplicas{store: store},
	}
	reg.MustRegister(m.restarts, m.desired)
	return m
}

// Restarted counts one replacement of a failed replica of k. A nil m
// counts nothing, so runtimes built without metrics need no checks.
func (m *Metrics) Restarted(k VersionKey) {
	if m != nil {
		m.restarts.WithLabelValues(k.Model, k.Version).Inc()
	}
}

var desiredDesc = prometheus.NewDesc("sloproxy_replicas_desired",
	"Replicas the state asks for, per model version (every version, not only the current one, and whichever proxy runs it).",
	[]string{"model", "version"}, nil)

// desiredReplicas exports the state's replica counts at scrape time, so
// that the figure is the state's own and needs no update path.
type desiredReplicas struct{ store Store }

// Describe implements prometheus.Collector.
func (d desiredReplicas) Describe(ch chan<- *prometheus.Desc) { ch <- desiredDesc }

// Collect implements prometheus.Collector.
func (d desiredReplicas) Collect(ch chan<- prometheus.Metric) {
	for _, model := range d.store.Snapshot().Models() {
		for _, mv := range model.Versions {
			ch <- prometheus.MustNewConstMetric(desiredDesc, prometheus.GaugeValue, float64(mv.Replicas), mv.Model, mv.Version)
		}
	}
}
