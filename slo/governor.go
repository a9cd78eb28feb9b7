package slo

import (
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
)

// Governor decides, for one model version, which queries may queue
// (admission, see Admit) and when a free worker of its replicas takes its
// batch (pacing, see Hold), and learns from every batch the replicas send:
// the fit admission predicts from, the calibration of admission's margin,
// and the pacer's record of the batches in flight. The dispatcher asks it
// through dispatch.Governor; a reload that changes the version's Batching
// replaces it, and with it everything it learned.
//
// Governor is safe for concurrent use.
type Governor struct {
	est   estimator // nil: no admission
	paced bool      // batch starts are staggered
	cal   calibration
	pace  pacer
}

var _ dispatch.Governor = (*Governor)(nil)

// estimator is what admission predicts from and the batches teach: a Fit.
type estimator interface {
	Estimate(n int) (typical, tail time.Duration)
	Observe(n int, latency time.Duration)
	ObserveOverrun(n int, atLeast time.Duration)
}

// NewGovernor returns a Governor that admits queries by fit (nil: every
// query) and, paced, staggers the batch starts of the version's replicas.
func NewGovernor(fit *Fit, paced bool) *Governor {
	g := &Governor{paced: paced}
	if fit != nil {
		g.est = fit
	}
	return g
}

// Fit is the latency fit admission predicts from; nil without admission.
func (g *Governor) Fit() *Fit {
	f, _ := g.est.(*Fit)
	return f
}

// Hold implements dispatch.Pacer: while paced, how long a free worker
// waits so that the replicas' batch starts are staggered (see pacer);
// else 0.
func (g *Governor) Hold(now time.Time, workers, n, queued int, slack time.Duration) time.Duration {
	if !g.paced {
		return 0
	}
	return g.pace.hold(now, max(1, workers), n, queued, slack)
}

// Spacing implements dispatch.Pacer: over how many lanes batch starts are
// staggered (every worker slot while paced, else 1) and the pacer's
// typical service time, which lane-aware controllers (AIMD, LatencyModel)
// plan their batches by.
func (g *Governor) Spacing(workers int) (lanes int, typical time.Duration) {
	lanes = 1
	if g.paced {
		lanes = max(1, workers)
	}
	return lanes, g.pace.typical()
}

// Started implements dispatch.BatchObserver: the pacer records the batch
// in flight, expected to end after the fit's typical latency for n (at
// once without a fit).
func (g *Governor) Started(now time.Time, n int) time.Time {
	end := now
	if g.est != nil {
		typical, _ := g.est.Estimate(n)
		end = now.Add(typical)
	}
	g.pace.started(now, end)
	return end
}

// Ended implements dispatch.BatchObserver: the pacer forgets the batch and
// averages its service time in when it was answered; the fit learns its
// latency when it was answered, its lower bound when it overran
// (Fit.ObserveOverrun), and nothing when the replica failed it.
func (g *Governor) Ended(n int, end time.Time, latency time.Duration, how dispatch.Outcome) {
	g.pace.finished(end, latency, how == dispatch.Answered)
	if g.est == nil {
		return
	}
	switch how {
	case dispatch.Answered:
		g.est.Observe(n, latency)
	case dispatch.Overran:
		g.est.ObserveOverrun(n, latency)
	}
}
