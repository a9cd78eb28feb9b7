package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// GET /api/v1/apps
func (h *handler) listApps(w http.ResponseWriter, r *http.Request) error {
	snap := h.store.Snapshot()
	list := AppList{Apps: []AppView{}}
	for _, a := range snap.Apps() {
		list.Apps = append(list.Apps, appView(snap, a))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// GET /api/v1/apps/{app}
func (h *handler) getApp(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	return h.writeApp(w, http.StatusOK, name)
}

// writeApp answers the app named name as the Store's snapshot has it.
func (h *handler) writeApp(w http.ResponseWriter, status int, name string) error {
	snap := h.store.Snapshot()
	a, ok := snap.App(name)
	if !ok {
		return fmt.Errorf("%w: app %q", state.ErrNotFound, name)
	}
	writeJSON(w, status, appView(snap, a))
	return nil
}

// POST /api/v1/apps creates an app; 409 if one of that name exists.
//
// The existence check reads this proxy's snapshot, so two proxies creating
// the same app at the same moment may both succeed, the later replacing the
// earlier: the state API has no create-only mutation.
func (h *handler) createApp(w http.ResponseWriter, r *http.Request) error {
	var body App
	if err := decode(w, r, &body); err != nil {
		return err
	}
	a := body.state()
	if err := a.Validate(); err != nil {
		return err
	}
	if err := checkPolicy(a); err != nil {
		return err
	}
	if _, ok := h.store.Snapshot().App(a.Name); ok {
		return fmt.Errorf("%w: app %q: already exists; replace it with PUT %s/%s", state.ErrConflict, a.Name, pathApps, a.Name)
	}
	if err := h.store.PutApp(r.Context(), a); err != nil {
		return err
	}
	w.Header().Set("Location", pathApps+"/"+a.Name)
	return h.writeApp(w, http.StatusCreated, a.Name)
}

// PUT /api/v1/apps/{app} creates the app (201) or replaces it (200).
func (h *handler) putApp(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	var body App
	if err := decode(w, r, &body); err != nil {
		return err
	}
	switch body.Name {
	case "":
		body.Name = name
	case name:
	default:
		return badRequest("app %q: name %q in the body differs from the path's", name, clip.String(body.Name))
	}
	next := body.state()
	if err := next.Validate(); err != nil {
		return err
	}
	if err := checkPolicy(next); err != nil {
		return err
	}
	_, existed := h.store.Snapshot().App(name)
	// The store keeps the selection and features specs set through PUT
	// .../selection and .../features, and refuses an app its features spec
	// cannot fill (features.Table.CheckApp).
	if err := h.store.PutApp(r.Context(), next); err != nil {
		return err
	}
	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
		w.Header().Set("Location", pathApps+"/"+name)
	}
	return h.writeApp(w, status, name)
}

// DELETE /api/v1/apps/{app} deletes the app and its links.
func (h *handler) deleteApp(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	if err := h.store.DeleteApp(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// PUT /api/v1/apps/{app}/links/{model} lets the app use the model; linking
// twice is not an error. It answers the app.
//
// Unless the body is {"force": true}, the profile gate first checks the
// model's current version against the app's SLO (see gate).
func (h *handler) link(w http.ResponseWriter, r *http.Request) error {
	var body LinkRequest
	if err := decodeOptional(w, r, &body); err != nil {
		return err
	}
	return h.changeLink(w, r, func(ctx context.Context, app, model string) error {
		if err := h.gate(ctx, linkMoves(h.store.Snapshot(), app, model), body.Force); err != nil {
			return err
		}
		return h.store.Link(ctx, app, model)
	})
}

// DELETE /api/v1/apps/{app}/links/{model} stops the app from using the
// model; unlinking a model that is not linked is not an error, so that a
// retry after a lost answer succeeds. It answers the app.
func (h *handler) unlink(w http.ResponseWriter, r *http.Request) error {
	return h.changeLink(w, r, h.store.Unlink)
}

func (h *handler) changeLink(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, app, model string) error) error {
	app, err := pathName(r, "app")
	if err != nil {
		return err
	}
	model, err := pathName(r, "model")
	if err != nil {
		return err
	}
	if err := change(r.Context(), app, model); err != nil {
		return err
	}
	return h.writeApp(w, http.StatusOK, app)
}

// GET /api/v1/apps/{app}/selection
func (h *handler) getSelection(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	if h.sel == nil {
		return errorf(http.StatusNotImplemented, "this admin API has no model selection to show")
	}
	st, err := h.sel(r.Context(), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// PUT /api/v1/apps/{app}/selection sets the app's selection spec, which
// every proxy then runs in place of the policy the app names and the
// configuration file's settings for it. It answers the app. Unless the
// query has force=true, the profile gate first checks each arm with a
// share against the app's SLO (see gate).
func (h *handler) putSelection(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := decode(w, r, &raw); err != nil {
		return err
	}
	spec, err := selection.ParseSpec(raw)
	if err != nil {
		if _, ok := h.store.Snapshot().App(name); !ok {
			return fmt.Errorf("%w: app %q", state.ErrNotFound, name)
		}
		return badRequest("app %q: selection: %v", name, err)
	}
	stored, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	force, err := forced(r)
	if err != nil {
		return err
	}
	if err := h.gate(r.Context(), selectionMoves(h.store.Snapshot(), name, spec), force); err != nil {
		return err
	}
	err = h.store.UpdateApp(r.Context(), name, func(a *state.App, models []string) error {
		if err := spec.CheckArms(models); err != nil {
			return badRequest("app %q: selection: %v (link it first)", name, err)
		}
		a.Selection = stored
		return nil
	})
	if err != nil {
		return err
	}
	return h.writeApp(w, http.StatusOK, name)
}

// DELETE /api/v1/apps/{app}/selection removes the app's selection spec:
// the app runs the policy it names again, with the configuration file's
// settings for it, or the defaults. It answers the app.
func (h *handler) deleteSelection(w http.ResponseWriter, r *http.Request) error {
	return h.updateApp(w, r, func(a *state.App) error { a.Selection = nil; return nil })
}

// updateApp applies change to the app the path names, in one step with
// the state, and answers the app.
func (h *handler) updateApp(w http.ResponseWriter, r *http.Request, change func(a *state.App) error) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	err = h.store.UpdateApp(r.Context(), name, func(a *state.App, _ []string) error { return change(a) })
	if err != nil {
		return err
	}
	return h.writeApp(w, http.StatusOK, name)
}

// checkPolicy rejects a policy name the selection package does not know.
// (Its settings, such as weighted's shares, come from
// PUT /api/v1/apps/{app}/selection or the configuration file; see
// docs/selection.md.)
func checkPolicy(a state.App) error {
	if !selection.ValidName(a.Policy) {
		return badRequest("app %q: policy %q: must be empty, single, weighted, exp3 or exp4", clip.String(a.Name), clip.String(a.Policy))
	}
	return nil
}
