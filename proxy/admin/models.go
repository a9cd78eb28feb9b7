package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/state"
)

// GET /api/v1/models
func (h *handler) listModels(w http.ResponseWriter, r *http.Request) error {
	snap := h.store.Snapshot()
	list := ModelList{Models: []ModelView{}}
	for _, m := range snap.Models() {
		list.Models = append(list.Models, h.withProfiles(snap, modelView(snap, m, h.problem, h.usage)))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// GET /api/v1/models/{model}
func (h *handler) getModel(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "model")
	if err != nil {
		return err
	}
	return h.writeModel(w, http.StatusOK, name)
}

// writeModel answers the model named name as the Store's snapshot has it.
func (h *handler) writeModel(w http.ResponseWriter, status int, name string) error {
	snap := h.store.Snapshot()
	m, ok := snap.Model(name)
	if !ok {
		return fmt.Errorf("%w: model %q", state.ErrNotFound, name)
	}
	writeJSON(w, status, h.withProfiles(snap, modelView(snap, m, h.problem, h.usage)))
	return nil
}

// POST /api/v1/models/{model}/versions registers a version, creating the
// model with its first version, which becomes current; later versions
// become current only through PUT .../current. It answers the model.
//
// A version is immutable but for its replica count: registering it again
// with the same spec is a harmless retry (200), with another spec a
// conflict (409), decided by the Store on the state it commits to.
func (h *handler) registerVersion(w http.ResponseWriter, r *http.Request) error {
	model, err := pathName(r, "model")
	if err != nil {
		return err
	}
	v := state.ModelVersion{Replicas: 1} // the default when the body leaves it out
	if err := decode(w, r, &v); err != nil {
		return err
	}
	switch v.Model {
	case "":
		v.Model = model
	case model:
	default:
		return badRequest("model %q: model %q in the body differs from the path's", model, clip.String(v.Model))
	}
	if err := v.Validate(); err != nil {
		return err
	}
	if err := h.checkReplicas(v.Model, v.Version, v.Replicas); err != nil {
		return err
	}
	added, err := h.store.AddVersion(r.Context(), v)
	switch {
	case errors.Is(err, state.ErrConflict):
		return fmt.Errorf("%w: register a new version, or change the replica count with PUT %s/%s/versions/%s/replicas",
			err, pathModels, model, v.Version)
	case err != nil:
		return err
	case !added:
		return h.writeModel(w, http.StatusOK, model)
	}
	w.Header().Set("Location", pathModels+"/"+model)
	return h.writeModel(w, http.StatusCreated, model)
}

// DELETE /api/v1/models/{model}/versions/{version} deletes the version,
// and the model with its last version.
func (h *handler) deleteVersion(w http.ResponseWriter, r *http.Request) error {
	model, version, err := modelVersion(r)
	if err != nil {
		return err
	}
	if err := h.store.DeleteVersion(r.Context(), model, version); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// PUT /api/v1/models/{model}/current {"version": V} makes V the current
// version: a deployment, or a rollback when V is older. It answers the
// model. Unless the body has "force": true, the profile gate first checks
// V against the SLO of every app linked to the model (see gate).
func (h *handler) setCurrent(w http.ResponseWriter, r *http.Request) error {
	model, err := pathName(r, "model")
	if err != nil {
		return err
	}
	var body CurrentRequest
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Version == "" {
		return badRequest("model %q: version: required", model)
	}
	if !state.ValidName(body.Version) {
		return badRequest("model %q: version %q: must match [a-z0-9][a-z0-9_.-]{0,62}", model, clip.String(body.Version))
	}
	if err := h.gate(r.Context(), currentMoves(h.store.Snapshot(), model, body.Version), body.Force); err != nil {
		return err
	}
	if err := h.store.SetCurrent(r.Context(), model, body.Version); err != nil {
		return err
	}
	return h.writeModel(w, http.StatusOK, model)
}

// PUT /api/v1/models/{model}/versions/{version}/replicas {"replicas": N}
// sets the desired replica count; the runtimes start or stop replicas to
// match. It answers the model. The count changes in one atomic update of
// the state (Store.ScaleVersion, the autoscaler's path too), so nothing
// else of the version's spec can be undone by it; of two concurrent
// scalings the last wins. On an autoscaled version the autoscaler's next
// decision may change it again, within the version's bounds.
func (h *handler) setReplicas(w http.ResponseWriter, r *http.Request) error {
	model, version, err := modelVersion(r)
	if err != nil {
		return err
	}
	// ReplicasRequest with a pointer, so that a missing count is reported.
	var body struct {
		Replicas *int `json:"replicas"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Replicas == nil {
		return badRequest("model %q version %q: replicas: required", model, version)
	}
	if err := h.checkReplicas(model, version, *body.Replicas); err != nil {
		return err
	}
	if err := h.store.ScaleVersion(r.Context(), model, version, *body.Replicas); err != nil {
		return err
	}
	return h.writeModel(w, http.StatusOK, model)
}

// checkReplicas refuses n replicas of version of model above
// Options.MaxReplicas, naming the limit so that who asked knows what to
// change.
func (h *handler) checkReplicas(model, version string, n int) error {
	if h.maxReplicas > 0 && n > h.maxReplicas {
		return badRequest("model %q version %q: replicas %d: above limits.max_replicas (%d)", model, version, n, h.maxReplicas)
	}
	return nil
}

// modelVersion returns the model and version path variables.
func modelVersion(r *http.Request) (model, version string, err error) {
	if model, err = pathName(r, "model"); err != nil {
		return "", "", err
	}
	if version, err = pathName(r, "version"); err != nil {
		return "", "", err
	}
	return model, version, nil
}
