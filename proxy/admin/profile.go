package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// Profiler measures a model version's live replicas (containers/profile,
// behind the query API's input encoding): inputs are JSON inputs as a
// query sends them; none means the version's example input, else an empty
// one. repeats is how many batches of each size each replica sends; 0
// means the profiler's default. Errors wrap state.ErrInvalid for inputs
// the version or its replicas refuse, state.ErrConflict when there is no
// live replica, and state.ErrUnavailable when a replica fails otherwise.
type Profiler interface {
	Profile(ctx context.Context, v state.ModelVersion, replicas []string, inputs []json.RawMessage, repeats int) (state.Profile, error)
}

// DefaultProfileMaxAge is how old a stored profile may be for the gate to
// use it rather than profile again.
const DefaultProfileMaxAge = time.Hour

// profilePath is the path of a version's profile.
func profilePath(model, version string) string {
	return pathModels + "/" + model + "/versions/" + version + "/profile"
}

// POST /api/v1/models/{model}/versions/{version}/profile profiles the
// version's live replicas now, stores the profile with the version and
// answers it. The body (a ProfileRequest) may be empty.
func (h *handler) profileVersion(w http.ResponseWriter, r *http.Request) error {
	model, version, err := modelVersion(r)
	if err != nil {
		return err
	}
	var req ProfileRequest
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	if req.Repeats < 0 || req.Repeats > maxRepeats {
		return badRequest("model %q version %q: repeats %d: must be between 0 and %d", model, version, req.Repeats, maxRepeats)
	}
	p, err := h.runProfile(r.Context(), model, version, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.profileView(h.store.Snapshot(), model, version, p))
	return nil
}

// maxRepeats bounds ProfileRequest.Repeats: the profile runs within one
// request.
const maxRepeats = 1000

// GET /api/v1/models/{model}/versions/{version}/profile answers the
// version's stored profile.
func (h *handler) getProfile(w http.ResponseWriter, r *http.Request) error {
	model, version, err := modelVersion(r)
	if err != nil {
		return err
	}
	snap := h.store.Snapshot()
	if _, ok := snap.Version(model, version); !ok {
		return fmt.Errorf("%w: model %q version %q", state.ErrNotFound, model, version)
	}
	p, ok := snap.Profile(model, version)
	if !ok {
		return fmt.Errorf("%w: model %q version %q has no profile; POST %s takes one", state.ErrNotFound, model, version, profilePath(model, version))
	}
	writeJSON(w, http.StatusOK, h.profileView(snap, model, version, p))
	return nil
}

// runProfile profiles version of model and stores the profile.
func (h *handler) runProfile(ctx context.Context, model, version string, req ProfileRequest) (state.Profile, error) {
	if h.profiler == nil {
		return state.Profile{}, errorf(http.StatusNotImplemented, "this admin API has no profiler")
	}
	snap, replicas := h.liveReplicas(ctx, model, version)
	v, ok := snap.Version(model, version)
	if !ok {
		return state.Profile{}, fmt.Errorf("%w: model %q version %q", state.ErrNotFound, model, version)
	}
	p, err := h.profiler.Profile(ctx, v, replicas, req.Inputs, req.Repeats)
	if err != nil {
		return state.Profile{}, fmt.Errorf("model %q version %q: profile: %w", model, version, err)
	}
	if err := h.store.SetProfile(ctx, model, version, p); err != nil {
		return state.Profile{}, err
	}
	h.log.Info("admin: profiled a model version", zap.String("model", model), zap.String("version", version),
		zap.Duration("a", p.A), zap.Duration("b", p.B), zap.Duration("tail", p.Tail), zap.Int("replicas", p.Replicas))
	return p, nil
}

// liveReplicas returns the state once version of model has a live
// replica, and their addresses; after Options.ReplicaWait, or when ctx
// ends, the state as it is, with none. A version registered a moment ago
// (register, then link) gets the time its replicas take to start.
func (h *handler) liveReplicas(ctx context.Context, model, version string) (*state.Snapshot, []string) {
	timer := time.NewTimer(h.replicaWait)
	defer timer.Stop()
	for {
		snap := h.store.Snapshot()
		if _, ok := snap.Version(model, version); !ok {
			return snap, nil
		}
		if addrs := snap.Replicas(model, version); len(addrs) > 0 {
			return snap, addrs
		}
		select {
		case <-snap.Changed():
		case <-timer.C:
			return snap, nil
		case <-ctx.Done():
			return snap, nil
		}
	}
}

// DefaultReplicaWait is Options.ReplicaWait's default.
const DefaultReplicaWait = 20 * time.Second

// move is one app's traffic moving to one model version.
type move struct{ app, model, version string }

// gate profiles each version that moves would send traffic to, unless
// it has a profile younger than DefaultProfileMaxAge, and refuses (409)
// when a version's batch-1 p99 is above the SLO of an app that would route
// to it, or when the version cannot be profiled. With force it logs what
// it would have refused at warn and lets the change go ahead. Without a
// profiler it lets everything through: there is nothing to measure with.
func (h *handler) gate(ctx context.Context, moves []move, force bool) error {
	if h.profiler == nil || len(moves) == 0 {
		return nil
	}
	snap := h.store.Snapshot()
	var refusals []string
	profiles := map[[2]string]state.Profile{}
	for _, rt := range moves {
		key := [2]string{rt.model, rt.version}
		p, ok := profiles[key]
		if !ok {
			var err error
			if p, err = h.freshProfile(ctx, snap, rt.model, rt.version); err != nil {
				if errors.Is(err, context.Canceled) {
					return err
				}
				refusals = append(refusals, fmt.Sprintf("%v; it must be profiled before it takes traffic", err))
				profiles[key] = state.Profile{}
				continue
			}
			profiles[key] = p
		}
		a, ok := snap.App(rt.app)
		l1, measured := p.Line(1)
		if !ok || !measured || l1.P99 <= a.SLO {
			continue
		}
		refusals = append(refusals, fmt.Sprintf("model %q version %q cannot meet app %q's SLO of %v: its profile's batch 1 line has p99 %v (p50 %v, %.1f/s per replica, profiled %s)",
			rt.model, rt.version, rt.app, a.SLO, round(l1.P99), round(l1.P50), l1.Throughput, p.At.Format(time.RFC3339)))
	}
	if len(refusals) == 0 {
		return nil
	}
	slices.Sort(refusals)
	refusals = slices.Compact(refusals)
	if force {
		h.log.Warn("admin: gate overridden with force: traffic moves to a version the profile gate refused", zap.Strings("refusals", refusals))
		return nil
	}
	return errorf(http.StatusConflict, "gate: %s; pass force (\"force\": true, or --force) to move the traffic anyway", strings.Join(refusals, "; "))
}

// freshProfile returns the stored profile of version of model when it is
// younger than the maximum age, else profiles the version now.
func (h *handler) freshProfile(ctx context.Context, snap *state.Snapshot, model, version string) (state.Profile, error) {
	if p, ok := snap.Profile(model, version); ok && time.Since(p.At) < DefaultProfileMaxAge {
		return p, nil
	}
	return h.runProfile(ctx, model, version, ProfileRequest{})
}

// round rounds d for a message: to 0.1 ms.
func round(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }

// linkMoves is the traffic linking model to app moves: the app's to the
// model's current version.
func linkMoves(snap *state.Snapshot, app, model string) []move {
	if slices.Contains(snap.ModelsOf(app), model) {
		return nil // linked already: nothing moves
	}
	if mv, ok := snap.Current(model); ok {
		return []move{{app, model, mv.Version}}
	}
	return nil
}

// currentMoves is the traffic making version current moves: that of
// every app linked to the model.
func currentMoves(snap *state.Snapshot, model, version string) []move {
	if mv, ok := snap.Current(model); ok && mv.Version == version {
		return nil
	}
	if _, ok := snap.Version(model, version); !ok {
		return nil // the Store answers that it is not found
	}
	var moves []move
	for _, app := range snap.AppsOf(model) {
		moves = append(moves, move{app, model, version})
	}
	return moves
}

// selectionMoves is the traffic a selection spec moves: to every arm
// with a share above zero (a model's current version, or model:version).
// A shadow's answers are never returned, so it is not gated.
func selectionMoves(snap *state.Snapshot, app string, spec selection.Spec) []move {
	var moves []move
	for arm, share := range spec.Shares {
		if share <= 0 {
			continue
		}
		model, version, pinned := strings.Cut(arm, ":")
		if !pinned {
			mv, ok := snap.Current(model)
			if !ok {
				continue
			}
			version = mv.Version
		}
		if _, ok := snap.Version(model, version); ok {
			moves = append(moves, move{app, model, version})
		}
	}
	return moves
}

// forced reports whether the request's query asks for force=true.
func forced(r *http.Request) (bool, error) {
	s := r.URL.Query().Get("force")
	if s == "" {
		return false, nil
	}
	f, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest("query parameter force=%q: must be true or false", s)
	}
	return f, nil
}

// decodeOptional is decode for a body that may be empty or blank.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return bodyError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return decode(w, r, v)
}

// profileView builds the answer for profile p of version of model: the
// profile, and for each app linked to the model whether the version meets
// its SLO, the largest batch that fits it, and, with a price, the cost per
// 1,000 predictions of a replica sending batches of that size back to back.
func (h *handler) profileView(snap *state.Snapshot, model, version string, p state.Profile) ProfileView {
	v := ProfileView{Model: model, Version: version, Profile: p, Apps: []ProfileFit{}}
	limit := 0
	for _, l := range p.Lines {
		limit = max(limit, l.Batch)
	}
	l1, _ := p.Line(1)
	price, priced := h.price(model, version)
	for _, name := range snap.AppsOf(model) {
		a, ok := snap.App(name)
		if !ok {
			continue
		}
		fit := ProfileFit{App: name, SLOMillis: millis(a.SLO), MeetsSLO: l1.P99 <= a.SLO, LargestBatch: p.Largest(a.SLO, limit)}
		if priced && fit.LargestBatch > 0 {
			n := float64(fit.LargestBatch)
			perSecond := n / (p.A + time.Duration(n)*p.B).Seconds() // one replica, batches back to back
			cost := price / 3600 / perSecond * 1000
			fit.CostPer1K = &cost
		}
		v.Apps = append(v.Apps, fit)
	}
	return v
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// withProfiles returns m with the view of each version's stored profile.
func (h *handler) withProfiles(snap *state.Snapshot, m ModelView) ModelView {
	for i, v := range m.Versions {
		if p, ok := snap.Profile(m.Name, v.Version); ok {
			pv := h.profileView(snap, m.Name, v.Version, p)
			m.Versions[i].Profile = &pv
		}
	}
	return m
}
