package proxy

import "github.com/prometheus/client_golang/prometheus"

// metrics are the query path's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
	shed     *prometheus.CounterVec
}

// Outcomes of a query, the outcome label's values.
const (
	outcomeOK       = "ok"
	outcomeDefault  = "default"
	outcomeError    = "error"
	outcomeShed     = "shed"
	outcomeCanceled = "canceled"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_requests_total",
			Help: "Queries answered, by API (rest, oip or grpc), app (empty for a model addressed through the OIP), model and outcome (ok, default, shed, error, canceled).",
		}, []string{"api", "app", "model", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_request_duration_seconds",
			Help:    "End-to-end time from a query's arrival to its answer, by API and app.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}, []string{"api", "app"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sloproxy_requests_in_flight",
			Help: "Queries received and not yet answered.",
		}),
	}
	m.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_shed_total",
		Help: "Queries refused by admission because they would miss their deadline, by app and the shed policy that answered them (default, reject, unavailable).",
	}, []string{"app", "policy"})
	reg.MustRegister(m.requests, m.latency, m.inflight, m.shed)
	return m
}
