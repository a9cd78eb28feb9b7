package jobs

import "github.com/prometheus/client_golang/prometheus"

// The jobs' metrics, one series per job running on this proxy, read from
// the runs when scraped.
var (
	linesDesc = prometheus.NewDesc("sloproxy_job_lines", "Input lines of a running batch job: total in the input, handled, written to the output file, written to the errors file.",
		[]string{"job", "app", "kind"}, nil)
	rateDesc = prometheus.NewDesc("sloproxy_job_rate_lines_per_second", "Lines a running batch job handled a second since this proxy started or resumed it.",
		[]string{"job", "app"}, nil)
	etaDesc = prometheus.NewDesc("sloproxy_job_eta_seconds", "Seconds a running batch job needs for the rest of its input at its rate; absent before its first lines.",
		[]string{"job", "app"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- linesDesc
	ch <- rateDesc
	ch <- etaDesc
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	runs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, r := range runs {
		j := r.status()
		for kind, v := range map[string]int64{"total": j.Total, "handled": j.Lines, "written": j.Written, "failed": j.Failed} {
			ch <- prometheus.MustNewConstMetric(linesDesc, prometheus.GaugeValue, float64(v), j.ID, j.App, kind)
		}
		ch <- prometheus.MustNewConstMetric(rateDesc, prometheus.GaugeValue, j.Rate, j.ID, j.App)
		if j.Rate > 0 {
			ch <- prometheus.MustNewConstMetric(etaDesc, prometheus.GaugeValue, j.ETA, j.ID, j.App)
		}
	}
}
