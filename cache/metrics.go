package cache

import "github.com/prometheus/client_golang/prometheus"

// metrics are the cache's Prometheus metrics.
type metrics struct {
	reg           prometheus.Registerer
	lookups       prometheus.Counter
	hits          [3]prometheus.Counter // by Hit; [Miss] unused
	fills         prometheus.Counter
	fillsDropped  prometheus.Counter
	evictions     prometheus.Counter
	collisions    prometheus.Counter
	collapsed     prometheus.Counter
	flightWaiters prometheus.Gauge
	purges        prometheus.Counter
	redisErrors   *prometheus.CounterVec
	bypassed      *prometheus.CounterVec
	breaker       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_cache_hits_total",
		Help: "Cache lookups answered, by level (l1: this process, l2: Redis).",
	}, []string{"level"})
	m := &metrics{
		reg: reg,
		lookups: counter("sloproxy_cache_lookups_total",
			"Cache lookups (one per input)."),
		hits: [3]prometheus.Counter{nil, hits.WithLabelValues("l1"), hits.WithLabelValues("l2")},
		fills: counter("sloproxy_cache_fills_total",
			"Outputs stored after inference (L1 at once, Redis in the background)."),
		fillsDropped: counter("sloproxy_cache_fills_dropped_total",
			"Fills not written to Redis because the write queue was full."),
		evictions: counter("sloproxy_cache_l1_evictions_total",
			"L1 entries evicted to stay within the byte bound."),
		collisions: counter("sloproxy_cache_collisions_total",
			"Entries found under a key's index whose check hash differed: counted as misses."),
		collapsed: counter("sloproxy_cache_collapsed_total",
			"Misses answered by another query's inference of the same input (or by L1 inside the flight)."),
		flightWaiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sloproxy_cache_flight_waiters",
			Help: "Queries waiting now for an inference of the same input that another query started.",
		}),
		purges: counter("sloproxy_cache_purges_total",
			"Purges of a model's outputs made through this proxy."),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_cache_redis_errors_total",
			Help: "Redis calls of the cache that failed or timed out, by operation (mget, set).",
		}, []string{"op"}),
		bypassed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_cache_redis_bypassed_total",
			Help: "Redis calls skipped because the circuit breaker was open, by operation.",
		}, []string{"op"}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sloproxy_cache_breaker_state",
			Help: "The Redis circuit breaker: 0 closed (Redis used), 1 half-open (trying), 2 open (Redis skipped).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.lookups, hits, m.fills, m.fillsDropped, m.evictions, m.collisions, m.collapsed, m.flightWaiters,
			m.purges, m.redisErrors, m.bypassed, m.breaker)
	}
	return m
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

// l1Bytes exports L1's weighted size.
func (m *metrics) l1Bytes(f func() float64) {
	if m.reg != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sloproxy_cache_l1_bytes",
			Help: "Bytes held by L1's entries, as its weigher counts them.",
		}, f))
	}
}
