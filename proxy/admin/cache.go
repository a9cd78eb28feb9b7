package admin

import (
	"fmt"
	"net/http"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/state"
)

// POST /api/v1/cache/purge {"app": A} or {"model": M} removes the cached
// predictions of the app's linked models or of every version of the model,
// so that answers computed before a fix to a model are not served. The app
// or model must exist.
func (h *handler) purgeCache(w http.ResponseWriter, r *http.Request) error {
	if h.purge == nil {
		return errorf(http.StatusNotImplemented, "cache purge: this proxy has no prediction cache")
	}
	var body PurgeRequest
	if err := decode(w, r, &body); err != nil {
		return err
	}
	snap := h.store.Snapshot()
	switch {
	case (body.App == "") == (body.Model == ""):
		return badRequest("cache purge: set exactly one of app and model")
	case body.App != "":
		if _, ok := snap.App(body.App); !ok {
			return fmt.Errorf("%w: cache purge: app %q", state.ErrNotFound, clip.String(body.App))
		}
	default:
		if _, ok := snap.Model(body.Model); !ok {
			return fmt.Errorf("%w: cache purge: model %q", state.ErrNotFound, clip.String(body.Model))
		}
	}
	if err := h.purge(r.Context(), body.App, body.Model); err != nil {
		return fmt.Errorf("cache purge: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
