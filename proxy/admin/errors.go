package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/state"
)

// apiError is an error the handler itself finds (a malformed body, a
// missing token, an unknown endpoint), with the status it answers.
// Errors from the Store carry no status: writeError derives it.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}

// statusClientClosed is the status logged (nginx's 499) when the client went
// away before the answer; nobody reads it.
const statusClientClosed = 499

// statusOf maps err to the status of its answer. It is the only place that
// does, so a state error means the same status on every endpoint.
func statusOf(err error) int {
	var ae *apiError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae.status
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, state.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, state.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, state.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		return statusClientClosed
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers err as {"error": message} with the status statusOf
// chooses, and the headers that status calls for.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	switch status {
	case http.StatusUnauthorized:
		// RFC 6750: name the scheme, and say whether a token was sent.
		challenge := `Bearer realm="sloproxy-admin"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1") // the state backend may be back soon; mutations are safe to retry
	}
	if status >= http.StatusInternalServerError {
		h.log.Error("admin: request failed", zap.String("method", clip.String(r.Method)), zap.String("path", clip.String(r.URL.Path)),
			zap.Int("status", status), zap.Error(err))
	}
	// Names are clipped where the messages are formatted; this bounds the
	// whole, for any text from the request that was not.
	writeJSON(w, status, ErrorBody{Error: clip.To(err.Error(), 4<<10)})
}
