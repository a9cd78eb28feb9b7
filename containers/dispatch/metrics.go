package dispatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatchers' Prometheus metrics, labelled by model and
// version (and replica for health).
type Metrics struct {
	QueueWait      *prometheus.HistogramVec
	BatchSize      *prometheus.HistogramVec
	ServiceTime    *prometheus.HistogramVec
	ReplicaHealthy *prometheus.GaugeVec
	BatchRelease   *prometheus.CounterVec
	Shed           *prometheus.CounterVec
}

// NewMetrics registers the dispatch metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	mv := []string{"model", "version"}
	m := &Metrics{
		QueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_queue_wait_seconds",
			Help:    "Time a query waited in its model version's queue before its batch was sent.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, mv),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_batch_size",
			Help:    "Queries per batch sent to a replica.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}, mv),
		ServiceTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_batch_service_seconds",
			Help:    "Time from sending a batch to a replica to its answer.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, mv),
		ReplicaHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sloproxy_replica_healthy",
			Help: "1 while a replica takes work, 0 while it is ejected.",
		}, append(mv, "replica")),
	}
	m.BatchRelease = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_batch_release_total",
		Help: "Batches sent, by why they left: full (the size the controller chose), deadline (that size, cut by the head query's slack) or idle (the queue held fewer queries).",
	}, append(mv, "reason"))
	m.Shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_admission_shed_total",
		Help: "Queries refused before queueing because they were predicted to miss their deadline.",
	}, mv)
	reg.MustRegister(m.QueueWait, m.BatchSize, m.ServiceTime, m.ReplicaHealthy, m.BatchRelease, m.Shed)
	return m
}

// versionMetrics are a model version's series, resolved once per
// dispatcher instead of by label on every batch.
type versionMetrics struct {
	wait, size, service prometheus.Observer
	healthy             *prometheus.GaugeVec // by replica
	release             [releaseReasons]prometheus.Counter
	shed                prometheus.Counter
}

// forVersion returns the series of one model version; nil for nil m.
func (m *Metrics) forVersion(model, version string) *versionMetrics {
	if m == nil {
		return nil
	}
	labels := prometheus.Labels{"model": model, "version": version}
	vm := &versionMetrics{
		wait:    m.QueueWait.With(labels),
		size:    m.BatchSize.With(labels),
		service: m.ServiceTime.With(labels),
		healthy: m.ReplicaHealthy.MustCurryWith(labels),
		shed:    m.Shed.With(labels),
	}
	for reason, name := range [releaseReasons]string{releaseFull: "full", releaseDeadline: "deadline", releaseIdle: "idle"} {
		vm.release[reason] = m.BatchRelease.WithLabelValues(model, version, name)
	}
	return vm
}

// observeBatch records a batch leaving at now: its size, and the queue
// wait of each online query sent for the first time (a retried query's
// wait was recorded when it first left; a background query's wait is the
// idle capacity it waited for, not a query's delay).
func (vm *versionMetrics) observeBatch(batch []*query, now time.Time) {
	for _, q := range batch {
		if q.attempts == 0 && !q.background {
			vm.wait.Observe(now.Sub(q.enqueued).Seconds())
		}
	}
	vm.size.Observe(float64(len(batch)))
}
