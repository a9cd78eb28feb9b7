package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sloproxy/sloproxy/answered"
)

var (
	recentQueriesDesc = prometheus.NewDesc("sloproxy_recent_queries",
		"Answered queries this proxy remembers for their feedback; at most sloproxy_recent_queries_capacity (the configured recent-query memory).",
		nil, nil)
	recentQueriesCapDesc = prometheus.NewDesc("sloproxy_recent_queries_capacity",
		"How many answered queries this proxy remembers at most.", nil, nil)
	recentQueriesBytesDesc = prometheus.NewDesc("sloproxy_recent_queries_bytes",
		"Bytes of the records of the answered queries this proxy remembers.", nil, nil)
)

// memoryCollector exports what the proxy's recent-query memory holds,
// one of the bounded parts of its heap (docs/operations.md, Memory).
type memoryCollector struct{ m *answered.Memory }

// Describe implements prometheus.Collector.
func (c memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- recentQueriesDesc
	ch <- recentQueriesCapDesc
	ch <- recentQueriesBytesDesc
}

// Collect implements prometheus.Collector.
func (c memoryCollector) Collect(ch chan<- prometheus.Metric) {
	n, bytes := c.m.Held()
	ch <- prometheus.MustNewConstMetric(recentQueriesDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(recentQueriesCapDesc, prometheus.GaugeValue, float64(c.m.Size()))
	ch <- prometheus.MustNewConstMetric(recentQueriesBytesDesc, prometheus.GaugeValue, float64(bytes))
}
