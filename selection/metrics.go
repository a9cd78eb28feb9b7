package selection

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the selection metrics. The query path reports through its
// methods; the policies count rollbacks and state errors.
type Metrics struct {
	choices     *prometheus.CounterVec
	feedback    *prometheus.CounterVec
	gain        *prometheus.CounterVec
	answered    *prometheus.HistogramVec
	rollbacks   *prometheus.CounterVec
	shadow      *prometheus.CounterVec
	stateErrors *prometheus.CounterVec
}

// NewMetrics registers the selection metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		choices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_choices_total",
			Help: "Queries a policy sent to each arm (model or model:version), by app: the traffic share per model is its rate over the app's total.",
		}, []string{"app", "model"}),
		feedback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_feedback_total",
			Help: "Answers of each model scored by feedback, by app.",
		}, []string{"app", "model"}),
		gain: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_gain_total",
			Help: "Sum of the gains (in [0, 1]: 1 for a right label, exp(-squared error) for numbers) of each model's scored answers, by app; over sloproxy_selection_feedback_total it is the reward rate.",
		}, []string{"app", "model"}),
		answered: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sloproxy_selection_ensemble_answered",
			Help:    "How many of an ensemble's models answered by the deadline, by app.",
			Buckets: prometheus.LinearBuckets(0, 1, 9),
		}, []string{"app"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_rollbacks_total",
			Help: "Canaries rolled back by their guard on this proxy, by app and canary.",
		}, []string{"app", "model"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_shadow_total",
			Help: "Shadow answers compared with the answer returned, by app, shadow model and whether they agreed (true, false, or missing when the shadow did not answer).",
		}, []string{"app", "model", "agree"}),
		stateErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_selection_state_errors_total",
			Help: "Reads and writes of the shared policy state that failed, by app; choices then fall back on equal weights.",
		}, []string{"app"}),
	}
	reg.MustRegister(m.choices, m.feedback, m.gain, m.answered, m.rollbacks, m.shadow, m.stateErrors)
	return m
}

// Chose counts a query sent to arm.
func (m *Metrics) Chose(app, arm string) { m.choices.WithLabelValues(app, arm).Inc() }

// Scored counts feedback's gain for an answer of arm.
func (m *Metrics) Scored(app, arm string, gain float64) {
	m.feedback.WithLabelValues(app, arm).Inc()
	m.gain.WithLabelValues(app, arm).Add(gain)
}

// Answered records how many of an ensemble's arms answered.
func (m *Metrics) Answered(app string, n int) { m.answered.WithLabelValues(app).Observe(float64(n)) }

// Shadowed counts a shadow answer: agree is "true", "false" or "missing".
func (m *Metrics) Shadowed(app, arm, agree string) { m.shadow.WithLabelValues(app, arm, agree).Inc() }
