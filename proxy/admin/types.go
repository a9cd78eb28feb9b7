package admin

import (
	"encoding/json"
	"math"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// The API's wire types. The handler and the Client share them, so the two
// cannot drift apart; docs/openapi-admin.yaml describes the same shapes.

// App is an app as a client writes it: the body of POST /api/v1/apps and
// PUT /api/v1/apps/{app}.
type App struct {
	// Name identifies the app. Required by POST; PUT takes it from the
	// path, and a name given in the body must match the path.
	Name string `json:"name"`
	// InputType is bytes, int32, float32, float64 or string.
	InputType state.InputType `json:"input_type"`
	// SLOMillis is the latency objective in milliseconds; it may have a
	// fraction (0.5 is 500µs). It must be positive and at most an hour.
	SLOMillis float64 `json:"slo_ms"`
	// DefaultOutput is answered, flagged, when the deadline passes first.
	// Empty means an empty output.
	DefaultOutput string `json:"default_output"`
	// Policy names the model selection policy (single, weighted, exp3 or
	// exp4; see docs/selection.md); empty means the single
	// linked model.
	Policy string `json:"policy"`
	// Priority orders apps when load is shed: lower is shed first.
	Priority int `json:"priority"`
	// CacheTTLSeconds is how long the app's answers stay in the
	// prediction cache; 0 means the cache's default.
	CacheTTLSeconds float64 `json:"cache_ttl_s"`
	// NoCache keeps the app's answers out of the prediction cache.
	NoCache bool `json:"no_cache"`
	// Inputs lays the app's input out as named parts, in order (see
	// state.App.Inputs); absent means one part, "input".
	Inputs []state.InputPart `json:"inputs,omitempty"`
}

// AppView is an app as the API answers it: its fields and the models
// linked to it.
type AppView struct {
	App
	// Models are the sorted names of the models linked to the app; empty,
	// never null, when there are none.
	Models []string `json:"models"`
	// Selection is the selection spec set through
	// PUT /api/v1/apps/{app}/selection; absent when none is.
	Selection json.RawMessage `json:"selection,omitempty"`
	// Features is the feature lookup set through
	// PUT /api/v1/apps/{app}/features; absent when none is.
	Features json.RawMessage `json:"features,omitempty"`
}

// SLO returns the app's SLO as a duration.
func (a App) SLO() time.Duration {
	return durationOf(a.SLOMillis, time.Millisecond)
}

// state converts a to the state package's App.
func (a App) state() state.App {
	return state.App{
		Name:          a.Name,
		InputType:     a.InputType,
		SLO:           a.SLO(),
		DefaultOutput: a.DefaultOutput,
		Policy:        a.Policy,
		Priority:      a.Priority,
		CacheTTL:      durationOf(a.CacheTTLSeconds, time.Second),
		NoCache:       a.NoCache,
		Inputs:        a.Inputs,
	}
}

// durationOf converts a number of units to a duration, saturating: the
// state rejects what is out of range.
func durationOf(n float64, unit time.Duration) time.Duration {
	ns := math.Round(n * float64(unit))
	switch {
	case ns <= math.MinInt64:
		return math.MinInt64 // the state rejects it as negative
	case ns >= math.MaxInt64 || math.IsNaN(ns):
		return math.MaxInt64 // the state rejects it as too large
	}
	return time.Duration(ns)
}

// fromState converts the state package's App to its wire form.
func appFromState(a state.App) App {
	return App{
		Name:            a.Name,
		InputType:       a.InputType,
		SLOMillis:       float64(a.SLO) / float64(time.Millisecond),
		DefaultOutput:   a.DefaultOutput,
		Policy:          a.Policy,
		Priority:        a.Priority,
		CacheTTLSeconds: a.CacheTTL.Seconds(),
		NoCache:         a.NoCache,
		Inputs:          a.Inputs,
	}
}

// The body of POST /api/v1/models/{model}/versions is the state package's
// ModelVersion, whose JSON form is the wire form; its model may be left
// out (the path names the model) and its replicas default to 1.

// VersionView is a model version as the API answers it.
type VersionView struct {
	state.ModelVersion
	// Current reports whether this is the model's current version, the one
	// that serves its apps.
	Current bool `json:"current"`
	// LiveReplicas are the sorted addresses (host:port) of the replicas
	// the runtimes registered as live; empty, never null, when none are.
	// The desired count is Replicas.
	LiveReplicas []string `json:"live_replicas"`
	// Problem says why the runtime could not run the version on its last
	// attempt, as the proxy that answers saw it (see Options.Problem);
	// empty when there is none.
	Problem string `json:"problem,omitempty"`
	// Usage is what the version's replicas used and cost, as the proxy
	// that answers counted it (see Options.Usage); absent when it did not.
	Usage *Usage `json:"usage,omitempty"`
	// Profile is the version's latest profile; absent when it has none.
	Profile *ProfileView `json:"profile,omitempty"`
}

// ModelView is a model as the API answers it.
type ModelView struct {
	// Name identifies the model.
	Name string `json:"name"`
	// CurrentVersion names the version that serves queries; empty only
	// when the current version was deleted while no app was linked.
	CurrentVersion string `json:"current_version"`
	// InputType is the input type shared by the model's versions.
	InputType state.InputType `json:"input_type"`
	// Apps are the sorted names of the apps linked to the model.
	Apps []string `json:"apps"`
	// Versions in the order they were first registered, oldest first.
	Versions []VersionView `json:"versions"`
}

// Version returns the version named v.
func (m ModelView) Version(v string) (VersionView, bool) {
	for _, vv := range m.Versions {
		if vv.Version == v {
			return vv, true
		}
	}
	return VersionView{}, false
}

// AppList is the answer of GET /api/v1/apps.
type AppList struct {
	Apps []AppView `json:"apps"`
}

// ModelList is the answer of GET /api/v1/models.
type ModelList struct {
	Models []ModelView `json:"models"`
}

// CurrentRequest is the body of PUT /api/v1/models/{model}/current.
type CurrentRequest struct {
	// Version becomes the current version: a deployment, or a rollback
	// when it is older.
	Version string `json:"version"`
	// Force moves the traffic even when the profile gate refuses it (the
	// refusal is logged at warn).
	Force bool `json:"force,omitempty"`
}

// LinkRequest is the optional body of PUT /api/v1/apps/{app}/links/{model}.
type LinkRequest struct {
	// Force links even when the profile gate refuses the model's current
	// version for the app (the refusal is logged at warn).
	Force bool `json:"force,omitempty"`
}

// ProfileRequest is the optional body of POST
// /api/v1/models/{model}/versions/{version}/profile.
type ProfileRequest struct {
	// Inputs are sent in turn, each a JSON input as a query sends it (an
	// array of numbers, a string, base64 for bytes). Empty means the
	// version's example_input, else one empty input.
	Inputs []json.RawMessage `json:"inputs,omitempty"`
	// Repeats is how many batches of each size each replica sends; 0
	// means the profiler's default (10).
	Repeats int `json:"repeats,omitempty"`
}

// ProfileView is a version's profile as the API answers it.
type ProfileView struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Profile is what was measured.
	Profile state.Profile `json:"profile"`
	// Apps says, for each app linked to the model, what the profile means
	// for it; empty, never null, when none is.
	Apps []ProfileFit `json:"apps"`
}

// ProfileFit is what a profile means for one app.
type ProfileFit struct {
	App       string  `json:"app"`
	SLOMillis float64 `json:"slo_ms"`
	// MeetsSLO reports whether the batch-1 p99 is within the SLO: the
	// profile gate refuses the version for the app when it is not.
	MeetsSLO bool `json:"meets_slo"`
	// LargestBatch is the largest batch, at most the largest profiled,
	// whose planned latency a + b·n + tail fits within the SLO; 0 when
	// not even one item does.
	LargestBatch int `json:"largest_batch"`
	// CostPer1K is the cost of 1,000 predictions at LargestBatch: the
	// version's price per replica-hour over what one replica answers in
	// an hour sending such batches back to back (a + b·n each). Absent
	// without cost settings for the version, or when no batch fits.
	CostPer1K *float64 `json:"cost_per_1k,omitempty"`
}

// ReplicasRequest is the body of PUT
// /api/v1/models/{model}/versions/{version}/replicas.
type ReplicasRequest struct {
	// Replicas is the desired number of replicas, at least 1.
	Replicas int `json:"replicas"`
}

// PurgeRequest is the body of POST /api/v1/cache/purge. Exactly one of its
// fields is set.
type PurgeRequest struct {
	// App purges the cached predictions of the models linked to the app.
	App string `json:"app,omitempty"`
	// Model purges the cached predictions of every version of the model.
	Model string `json:"model,omitempty"`
}

// Health is the answer of GET /api/v1/healthz.
type Health struct {
	// Status is "ok".
	Status string `json:"status"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	// Error names the problem: the object and the field at fault.
	Error string `json:"error"`
}

// appView builds the view of a from snap.
func appView(snap *state.Snapshot, a state.App) AppView {
	return AppView{App: appFromState(a), Models: nonNil(snap.ModelsOf(a.Name)), Selection: a.Selection, Features: a.Features}
}

// modelView builds the view of m from snap, with each version's problem.
func modelView(snap *state.Snapshot, m state.Model, problem func(model, version string) string,
	usage func(model, version string) (Usage, bool)) ModelView {
	v := ModelView{
		Name:           m.Name,
		CurrentVersion: m.CurrentVersion,
		InputType:      m.InputType(),
		Apps:           nonNil(snap.AppsOf(m.Name)),
		Versions:       make([]VersionView, 0, len(m.Versions)),
	}
	for _, mv := range m.Versions {
		vv := VersionView{
			ModelVersion: mv,
			Current:      mv.Version == m.CurrentVersion,
			LiveReplicas: nonNil(snap.Replicas(m.Name, mv.Version)),
			Problem:      problem(m.Name, mv.Version),
		}
		if u, ok := usage(m.Name, mv.Version); ok {
			vv.Usage = &u
		}
		v.Versions = append(v.Versions, vv)
	}
	return v
}

// nonNil returns s, or an empty slice for nil, so that JSON shows [] for
// "none" rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
