package proxy

import (
	"fmt"
	"strings"

	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// Readiness is what GET /v2/health/ready requires before it answers 200,
// so that a load balancer sends queries only to a proxy that can answer
// them with a model rather than with default outputs.
type Readiness string

const (
	// ReadyEveryApp is Triton's strict readiness: every app has a ready
	// replica of the current version of a model that answers it (the
	// first linked model for a single-model app, any linked model for a
	// selection policy). With no app, the proxy is ready.
	ReadyEveryApp Readiness = "every_app"
	// ReadyAnyApp requires at least one app to be ready so: a proxy whose
	// apps fail independently keeps the traffic of those that work.
	ReadyAnyApp Readiness = "any_app"
)

// maxNotReady bounds how many unready apps a 503 names.
const maxNotReady = 10

// checkReady returns nil when the proxy can serve by its Readiness rule,
// else an ErrUnavailable naming what is not ready.
func (p *Proxy) checkReady(snap *state.Snapshot) error {
	if !p.ready.Load() {
		return errorf(ErrUnavailable, "the proxy is starting or shutting down")
	}
	apps := snap.Apps()
	var notReady []string
	for _, app := range apps {
		if why := p.appReady(snap, app); why != "" {
			notReady = append(notReady, "app "+app.Name+": "+why)
		} else if p.opts.Readiness == ReadyAnyApp {
			return nil
		}
	}
	switch {
	case p.opts.Readiness == ReadyAnyApp && len(apps) == 0:
		return errorf(ErrUnavailable, "not ready: no app is configured (oip.readiness is any_app)")
	case len(notReady) == 0:
		return nil
	}
	shown := notReady[:min(len(notReady), maxNotReady)]
	more := ""
	if n := len(notReady) - len(shown); n > 0 {
		more = fmt.Sprintf("; and %d more", n)
	}
	need := "every app needs"
	if p.opts.Readiness == ReadyAnyApp {
		need = "at least one app needs"
	}
	return errorf(ErrUnavailable, "not ready: %d of %d apps cannot be served by a model (%s a ready replica): %s%s",
		len(notReady), len(apps), need, strings.Join(shown, "; "), more)
}

// appReady returns why no model can answer app now, or "" when one can.
func (p *Proxy) appReady(snap *state.Snapshot, app state.App) string {
	arms := snap.ModelsOf(app.Name)
	if len(arms) == 0 {
		return "no model is linked to it"
	}
	if sel, _ := p.sel.Get(app.Name, app.Policy, app.Selection); sel == (selection.Single{}) {
		arms = arms[:1] // only the first linked model answers
	}
	var whys []string
	for _, arm := range arms {
		mv, ok := snap.Current(arm)
		if !ok {
			whys = append(whys, "model "+arm+" has no current version")
			continue
		}
		why := p.VersionReady(mv)
		if why == "" {
			return ""
		}
		whys = append(whys, why)
	}
	return strings.Join(whys, ", ")
}

// VersionReady returns why mv cannot answer on this proxy now, or "" when
// it has a healthy replica.
func (p *Proxy) VersionReady(mv state.ModelVersion) string {
	d := p.pool.get(mv.Model, mv.Version)
	if d == nil {
		return fmt.Sprintf("model %s version %s is not running on this proxy", mv.Model, mv.Version)
	}
	if _, healthy := d.Replicas(); healthy == 0 {
		return fmt.Sprintf("model %s version %s has no healthy replica", mv.Model, mv.Version)
	}
	return ""
}
