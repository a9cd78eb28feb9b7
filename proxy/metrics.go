package proxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sloproxy/sloproxy/slo"
)

// metrics are the query path's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
	shed     *prometheus.CounterVec
	// shedModel is shed's series for the queries to a model through the
	// OIP: no app, counted as the reject policy's.
	shedModel prometheus.Counter

	// The query path's series, looked up once per label set rather than
	// hashed on every query; the label sets are bounded by the apps and
	// model versions in the state (names from a URL never get here).
	counters  sync.Map // requestLabels → prometheus.Counter
	observers sync.Map // latencyLabels → prometheus.Observer
}

type requestLabels struct{ api, app, model, outcome string }

type latencyLabels struct{ api, app string }

// request is the requests counter of one label set.
func (m *metrics) request(api, app, model, outcome string) prometheus.Counter {
	k := requestLabels{api, app, model, outcome}
	if c, ok := m.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.counters.LoadOrStore(k, m.requests.WithLabelValues(api, app, model, outcome))
	return c.(prometheus.Counter)
}

// latencyOf is the latency histogram of one API and app.
func (m *metrics) latencyOf(api, app string) prometheus.Observer {
	k := latencyLabels{api, app}
	if o, ok := m.observers.Load(k); ok {
		return o.(prometheus.Observer)
	}
	o, _ := m.observers.LoadOrStore(k, m.latency.WithLabelValues(api, app))
	return o.(prometheus.Observer)
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
	m.shedModel = m.shed.WithLabelValues("", string(slo.ShedReject))
	reg.MustRegister(m.requests, m.latency, m.inflight, m.shed)
	return m
}
