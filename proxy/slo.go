package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/rolling"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// The request headers of the query API that tighten a query's SLO.
const (
	// HeaderTimeout is the caller's own deadline budget, a Go duration
	// ("25ms") or a number of milliseconds; the query's deadline is the
	// earlier of arrival + timeout and arrival + the app's SLO.
	HeaderTimeout = "Sloproxy-Timeout"
	// HeaderPriority is the query's priority class, for apps whose policy
	// allows it; no higher than the app's own.
	HeaderPriority = "Sloproxy-Priority"
)

// budget is a query's deadline budget and its priority class, from its app
// and the request's headers.
func budget(r *http.Request, app state.App, pol slo.Policy) (time.Duration, int, error) {
	d, prio := app.SLO, app.Priority
	if v := r.Header.Get(HeaderTimeout); v != "" {
		t, err := parseTimeout(v)
		if err != nil {
			return 0, 0, errorf(ErrBadInput, "header %s %q: %v", HeaderTimeout, clipToken([]byte(v)), err)
		}
		d = min(d, t)
	}
	if v := r.Header.Get(HeaderPriority); v != "" {
		p, err := strconv.Atoi(v)
		switch {
		case !pol.RequestPriority:
			return 0, 0, errorf(ErrBadInput, "header %s: app %q does not let requests set their priority (its policy's request_priority is off)", HeaderPriority, app.Name)
		case err != nil:
			return 0, 0, errorf(ErrBadInput, "header %s %q: must be an integer", HeaderPriority, clipToken([]byte(v)))
		case p > app.Priority:
			return 0, 0, errorf(ErrBadInput, "header %s %d: above the app's priority %d", HeaderPriority, p, app.Priority)
		}
		prio = p
	}
	return d, prio, nil
}

// MaxTimeout is the longest Sloproxy-Timeout a request may give: a
// deadline is a promise about latency, and one past an hour is a mistake
// in the header, refused rather than quietly shortened.
const MaxTimeout = time.Hour

// errTooLong is parseTimeout's error for a timeout above MaxTimeout; a
// variable, so that a request that sets the header allocates no error.
var errTooLong = errors.New("above the limit of an hour (1h, 3600s, 3600000 ms)")

// parseTimeout reads a Go duration or a number of milliseconds; it must be
// positive and at most MaxTimeout, in whichever form it comes.
func parseTimeout(v string) (time.Duration, error) {
	t, err := time.ParseDuration(v)
	if err != nil {
		ms, nerr := strconv.ParseFloat(v, 64)
		switch {
		case nerr != nil || ms != ms:
			return 0, errors.New(`must be a duration such as "25ms" or a number of milliseconds`)
		case ms > float64(MaxTimeout/time.Millisecond):
			return 0, errTooLong // checked before converting: a huge float does not fit a Duration
		case ms <= 0:
			return 0, errors.New("must be positive")
		}
		t = time.Duration(ms * float64(time.Millisecond))
	}
	if t <= 0 {
		return 0, errors.New("must be positive")
	}
	if t > MaxTimeout {
		return 0, errTooLong
	}
	return t, nil
}

// callerBudgetKey is the context key of a query's Sloproxy-Timeout when it
// is shorter than its app's SLO, and so is the budget that applies.
type callerBudgetKey struct{}

// withBudget notes in ctx the budget that applies to a query of app when
// it is the caller's rather than the app's SLO.
func withBudget(ctx context.Context, app state.App, budget time.Duration) context.Context {
	if budget >= app.SLO {
		return ctx
	}
	return context.WithValue(ctx, callerBudgetKey{}, budget)
}

// budgetOf says which budget a query of app ran under, for the default
// output's explanation: the caller's Sloproxy-Timeout or the app's SLO.
func budgetOf(ctx context.Context, app state.App) string {
	if d, ok := ctx.Value(callerBudgetKey{}).(time.Duration); ok {
		return "the caller's " + HeaderTimeout + " of " + d.String()
	}
	return "the app's SLO of " + app.SLO.String()
}

// shedError is a query refused by admission that its app answers with an
// error status (429 or 503) and Retry-After rather than its default
// output.
type shedError struct {
	err        error
	status     int
	retryAfter time.Duration
}

func (e *shedError) Error() string { return e.err.Error() }
func (e *shedError) Unwrap() error { return e.err }

// shed answers a for a query admission refused, by the app's policy.
func (p *Proxy) shed(a *answer, app state.App, pol slo.Policy, err error) {
	p.metrics.shed.WithLabelValues(app.Name, string(pol.Shed)).Inc()
	switch pol.Shed {
	case slo.ShedReject:
		a.err = &shedError{err: err, status: http.StatusTooManyRequests, retryAfter: pol.RetryAfter}
	case slo.ShedUnavailable:
		a.err = &shedError{err: err, status: http.StatusServiceUnavailable, retryAfter: pol.RetryAfter}
	default:
		*a = p.fallback(*a, app, err.Error())
	}
	a.shed = true
}

// attainment keeps each app's rolling SLO attainment and its totals since
// the proxy started, for the metrics. The windows outlive configuration
// reloads; one whose span changed starts over, its totals do not.
type attainment struct {
	policies *slo.Table

	mu   sync.Mutex // guards apps and each appSLO's window
	apps map[string]*appSLO
}

// appSLO is one app's attainment. The totals count each answer, and those
// within the SLO, since the proxy started: Prometheus divides their rates
// over any window it wants (the alert rules in deploy/prometheus use 5m to
// 3d), which the rolling attainment gauge, fixed to the app's window,
// cannot give.
type appSLO struct {
	window        *rolling.Window
	total, within atomic.Uint64
}

// record counts one answer of app: within its SLO when a model (or the
// cache) answered before the deadline.
func (at *attainment) record(app string, now time.Time, within bool) {
	span := at.policies.Get(app).Window
	at.mu.Lock()
	a := at.apps[app]
	if a == nil {
		a = &appSLO{}
		at.apps[app] = a
	}
	if a.window == nil || a.window.Span() != span {
		a.window = rolling.NewWindow(span)
	}
	w := a.window
	at.mu.Unlock()
	w.Record(now, within)
	a.total.Add(1)
	if within {
		a.within.Add(1)
	}
}

var (
	attainmentDesc = prometheus.NewDesc("sloproxy_slo_attainment",
		"Fraction of the app's queries over its policy's window answered by a model within the SLO (defaults and errors count as misses); 1 with no queries.",
		[]string{"app"}, nil)
	burnDesc = prometheus.NewDesc("sloproxy_slo_error_budget_burn_rate",
		"How fast the app's error budget burns over its policy's window: the fraction of queries that missed the SLO over 1 - objective.",
		[]string{"app"}, nil)
	objectiveDesc = prometheus.NewDesc("sloproxy_slo_objective",
		"The app's objective: the fraction of its queries that must be answered by a model within the SLO.",
		[]string{"app"}, nil)
	queriesDesc = prometheus.NewDesc("sloproxy_slo_queries_total",
		"Queries of the app answered (REST inputs, each of an input_batch counted), for SLO ratios over any window.",
		[]string{"app"}, nil)
	withinDesc = prometheus.NewDesc("sloproxy_slo_queries_within_total",
		"Queries of the app answered by a model (or the cache) within the SLO; over sloproxy_slo_queries_total it is the attainment.",
		[]string{"app"}, nil)
)

// Describe implements prometheus.Collector.
func (at *attainment) Describe(ch chan<- *prometheus.Desc) {
	ch <- attainmentDesc
	ch <- burnDesc
	ch <- objectiveDesc
	ch <- queriesDesc
	ch <- withinDesc
}

// Collect implements prometheus.Collector.
func (at *attainment) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	at.mu.Lock()
	defer at.mu.Unlock()
	for app, a := range at.apps {
		// within first: record adds to total before within, so the two
		// series never show more answers within the SLO than answers.
		within := a.within.Load()
		ch <- prometheus.MustNewConstMetric(queriesDesc, prometheus.CounterValue, float64(a.total.Load()), app)
		ch <- prometheus.MustNewConstMetric(withinDesc, prometheus.CounterValue, float64(within), app)
		f, _ := a.window.Attainment(now)
		objective := at.policies.Get(app).Objective
		ch <- prometheus.MustNewConstMetric(attainmentDesc, prometheus.GaugeValue, f, app)
		ch <- prometheus.MustNewConstMetric(burnDesc, prometheus.GaugeValue, slo.BurnRate(f, objective), app)
		ch <- prometheus.MustNewConstMetric(objectiveDesc, prometheus.GaugeValue, objective, app)
	}
}

// isShed reports whether err is admission's refusal.
func isShed(err error) bool { return errors.Is(err, dispatch.ErrShed) }

// retryAfter is the Retry-After header's value for d: whole seconds, at
// least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}
