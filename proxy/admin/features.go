package admin

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/state"
)

// FeatureTable is what the features endpoints need of the proxy's feature
// lookups (a *features.Table).
type FeatureTable interface {
	// Check says whether spec can be served by this proxy (a spec that
	// names no store needs the proxy's Redis).
	Check(spec features.Spec) error
	// Configured returns the configuration file's spec for app.
	Configured(app string) (features.Spec, bool)
}

// FeaturesView is an app's feature lookup in effect and where it comes
// from.
type FeaturesView struct {
	// App is the app's name.
	App string `json:"app"`
	// Spec is the lookup, in the features package's JSON form.
	Spec features.Spec `json:"spec"`
	// Source is "admin" for a spec set through PUT .../features, which
	// takes the place of the configuration file's, or "config".
	Source string `json:"source"`
}

// GET /api/v1/apps/{app}/features answers the app's feature lookup in
// effect; 404 when it looks no features up, 409 when its stored spec does
// not parse.
func (h *handler) getFeatures(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "app")
	if err != nil {
		return err
	}
	if h.features == nil {
		return errorf(http.StatusNotImplemented, "this admin API has no feature lookups to show")
	}
	a, ok := h.store.Snapshot().App(name)
	if !ok {
		return fmt.Errorf("%w: app %q", state.ErrNotFound, name)
	}
	if a.Features != nil {
		var spec features.Spec
		if err := spec.UnmarshalJSON(a.Features); err != nil {
			return fmt.Errorf("%w: app %q: its features spec in the state does not parse (%v); replace it with PUT %s/%s/features, or remove it with DELETE",
				state.ErrConflict, name, err, pathApps, name)
		}
		writeJSON(w, http.StatusOK, FeaturesView{App: name, Spec: spec, Source: "admin"})
		return nil
	}
	spec, ok := h.features.Configured(name)
	if !ok {
		return fmt.Errorf("%w: app %q looks no features up; set them with PUT %s/%s/features", state.ErrNotFound, name, pathApps, name)
	}
	writeJSON(w, http.StatusOK, FeaturesView{App: name, Spec: spec, Source: "config"})
	return nil
}

// PUT /api/v1/apps/{app}/features sets the app's feature lookup, which
// every proxy then runs in place of the configuration file's. The spec is
// checked against the app's input type and layout in the same step as
// the write, so that it cannot land on an app whose input changed
// meanwhile. It answers the app.
func (h *handler) putFeatures(w http.ResponseWriter, r *http.Request) error {
	if h.features == nil {
		return errorf(http.StatusNotImplemented, "this admin API cannot set feature lookups")
	}
	var raw json.RawMessage
	if err := decode(w, r, &raw); err != nil {
		return err
	}
	return h.updateApp(w, r, func(a *state.App) error {
		spec, err := features.ParseSpec(raw, *a)
		if err != nil {
			return badRequest("app %q: %v", a.Name, err)
		}
		if err := h.features.Check(spec); err != nil {
			return badRequest("app %q: %v; set features.redis to the feature store's address", a.Name, err)
		}
		stored, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		a.Features = stored
		return nil
	})
}

// DELETE /api/v1/apps/{app}/features removes the spec PUT set: the app
// looks its features up as the configuration file says, or not at all;
// 409 when the file's spec cannot fill the app's input, as the state
// checks (features.Table.CheckApp). It answers the app.
func (h *handler) deleteFeatures(w http.ResponseWriter, r *http.Request) error {
	return h.updateApp(w, r, func(a *state.App) error { a.Features = nil; return nil })
}
