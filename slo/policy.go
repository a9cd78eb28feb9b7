package slo

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/state"
)

// Shed is what an app answers for a query refused because it would miss
// its deadline.
type Shed string

// The shed policies.
const (
	// ShedDefault answers the app's default output, flagged, with the
	// reason "shed: would miss SLO" (HTTP 200).
	ShedDefault Shed = "default"
	// ShedReject answers 429 Too Many Requests with Retry-After.
	ShedReject Shed = "reject"
	// ShedUnavailable answers 503 Service Unavailable with Retry-After.
	ShedUnavailable Shed = "unavailable"
)

// The controllers' names in the configuration.
const (
	ControllerOff          = "off"
	ControllerStatic       = "static"
	ControllerAIMD         = "aimd"
	ControllerLatencyModel = "latency_model"
)

// Batching chooses a model version's batch-size controller. It is
// comparable: a reload replaces the controllers of a version only when its
// Batching changed.
type Batching struct {
	// Controller is off, static, aimd or latency_model.
	Controller string `yaml:"controller"`
	// Size is static's batch size, and the cap of aimd and latency_model
	// (0: the model version's batch size).
	Size int `yaml:"size"`
	// Quantile is the residual quantile latency_model plans against.
	Quantile float64 `yaml:"quantile"`
	// Decrease is aimd's multiplicative decrease.
	Decrease float64 `yaml:"decrease"`
	// Admission sheds queries predicted to miss their deadline before
	// they queue. Off, every query waits until its deadline.
	Admission bool `yaml:"admission"`
	// Pace staggers the starts of the replicas' batches, an even share of
	// a batch's service time apart, so that a query waits for a fraction
	// of a batch instead of a whole one (see Governor.Hold).
	Pace bool `yaml:"pace"`
}

// DefaultBatching needs no tuning: latency_model on the p99, with
// admission and paced replicas.
var DefaultBatching = Batching{Controller: ControllerLatencyModel, Quantile: 0.99, Decrease: 0.9, Admission: true, Pace: true}

// Validate names the first problem of b.
func (b Batching) Validate() error {
	switch b.Controller {
	case ControllerOff, ControllerAIMD, ControllerLatencyModel:
	case ControllerStatic:
		if b.Size <= 0 {
			return fmt.Errorf("size %d: static needs a positive batch size", b.Size)
		}
	default:
		return fmt.Errorf("controller %q: must be off, static, aimd or latency_model", b.Controller)
	}
	if b.Size < 0 {
		return fmt.Errorf("size %d: must not be negative", b.Size)
	}
	if !(b.Quantile > 0.5 && b.Quantile < 1) {
		return fmt.Errorf("quantile %v: must be above 0.5 and below 1", b.Quantile)
	}
	if !(b.Decrease > 0 && b.Decrease < 1) {
		return fmt.Errorf("decrease %v: must be above 0 and below 1", b.Decrease)
	}
	return nil
}

// NewController returns a factory of b's controller, one per replica.
func (b Batching) NewController() func() dispatch.Controller {
	switch b.Controller {
	case ControllerOff:
		return func() dispatch.Controller { return Off{} }
	case ControllerStatic:
		return func() dispatch.Controller { return Static(b.Size) }
	case ControllerAIMD:
		return func() dispatch.Controller { return &AIMD{Decrease: b.Decrease, Max: b.Size} }
	}
	return func() dispatch.Controller { return NewLatencyModel(b.Quantile, 0, b.Size) }
}

// NewGovernor returns a model version's Governor: admission on a fit of
// the Quantile when b.Admission is on, paced when b.Pace is.
func (b Batching) NewGovernor() *Governor {
	var fit *Fit
	if b.Admission {
		fit = NewFit(0, b.Quantile)
	}
	return NewGovernor(fit, b.Pace)
}

// Policy is what an SRE sets for one app, beyond the objective itself
// (the app's SLO, in the state): how much of its traffic must meet it,
// what a query that cannot gets, and how its models batch.
type Policy struct {
	// Objective is the fraction of queries that must be answered within
	// the SLO, 0.99 for "p99 ≤ SLO": the attainment target, whose
	// complement is the error budget.
	Objective float64
	// Window is the attainment metric's rolling window.
	Window time.Duration
	// Shed is what a query refused by admission gets.
	Shed Shed
	// RetryAfter is the Retry-After of a 429 or 503 shed answer.
	RetryAfter time.Duration
	// RequestPriority lets a request set its own priority class with the
	// Sloproxy-Priority header, no higher than the app's.
	RequestPriority bool
	// Batching chooses the controller of the models linked to the app.
	Batching Batching
}

// DefaultPolicy is the policy of an app the configuration file does not
// name.
var DefaultPolicy = Policy{Objective: 0.99, Window: 5 * time.Minute, Shed: ShedDefault, RetryAfter: time.Second, Batching: DefaultBatching}

// Reserve is the part of an SLO that a query of priority class p keeps in
// reserve at admission: none for class 0 and above, a fifth more for each
// class below, up to four fifths. As the queue grows the lowest classes
// are the first whose predicted finish crosses their line.
func Reserve(slo time.Duration, priority int) time.Duration {
	if priority >= 0 {
		return 0
	}
	return slo * time.Duration(min(-priority, 4)) / 5
}

// BatchingOf maps each model of snap to the Batching of the first app, by
// name, that links it: a model linked to several apps batches as one of
// them, the same one on every proxy and every reload. Models no app links
// get DefaultBatching.
func (t *Table) BatchingOf(snap *state.Snapshot) map[string]Batching {
	out := map[string]Batching{}
	for _, app := range snap.Apps() {
		for _, m := range snap.ModelsOf(app.Name) {
			if _, ok := out[m]; !ok {
				out[m] = t.Get(app.Name).Batching
			}
		}
	}
	for _, m := range snap.Models() {
		if _, ok := out[m.Name]; !ok {
			out[m.Name] = DefaultBatching
		}
	}
	return out
}

// MaxBatch is the cap on the batches of model version mv: its own batch
// size, else fallback (the configuration's default batch size).
func MaxBatch(mv state.ModelVersion, fallback int) int {
	if mv.BatchSize > 0 {
		return mv.BatchSize
	}
	return fallback
}

// Table maps app names to their policies; a reload replaces it whole.
// Apps it does not name get DefaultPolicy. Safe for concurrent use.
type Table struct {
	p atomic.Pointer[map[string]Policy]
}

// NewTable returns a table of the given policies.
func NewTable(policies map[string]Policy) *Table {
	t := &Table{}
	t.Set(policies)
	return t
}

// Set replaces every policy at once.
func (t *Table) Set(policies map[string]Policy) { t.p.Store(&policies) }

// Get returns app's policy.
func (t *Table) Get(app string) Policy {
	if t != nil {
		if p, ok := (*t.p.Load())[app]; ok {
			return p
		}
	}
	return DefaultPolicy
}

// BurnRate is how fast the error budget burns: the fraction of queries
// that missed the SLO over the fraction allowed to (1 - objective). 1
// spends the budget exactly over the SLO's period; 0 with no misses.
func BurnRate(attainment, objective float64) float64 {
	if objective >= 1 {
		if attainment < 1 {
			return 1e9
		}
		return 0
	}
	return (1 - attainment) / (1 - objective)
}
