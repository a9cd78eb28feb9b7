package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/state"
)

// Errors of the query path. Inner code wraps them with %w and a message
// naming the problem; statusOf maps them to HTTP status codes, once.
var (
	// ErrBadInput: the request is malformed or does not fit the app.
	ErrBadInput = errors.New("bad input")
	// ErrNotFound: no such app, model or version.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the request is valid but cannot be served now.
	ErrUnavailable = errors.New("unavailable")
)

// errClientGone is err, a query's context.Canceled, said as what it means:
// the client closed its connection, or its side of it, before the answer.
func errClientGone(err error) error {
	return fmt.Errorf("the client closed the connection before the answer (%w)", err)
}

// statusOf maps an error to its HTTP status code.
func statusOf(err error) int {
	var tooLarge *http.MaxBytesError
	var modelErr *dispatch.ModelError
	var shed *shedError
	switch {
	case errors.As(err, &shed):
		return shed.status
	case errors.Is(err, ErrBadInput), errors.Is(err, state.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound
	case errors.As(err, &tooLarge), rpc.IsCode(err, rpc.FrameTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnavailable), errors.Is(err, dispatch.ErrDeadline), errors.Is(err, dispatch.ErrStopped):
		return http.StatusServiceUnavailable
	case errors.As(err, &modelErr):
		// The model refused this input (the wrong number of features, a
		// value it cannot take): the caller's input, as the model judged it.
		return http.StatusUnprocessableEntity
	case errors.Is(err, context.Canceled):
		return 499 // the client closed the request, as nginx logs it
	}
	return http.StatusInternalServerError
}

// MaxErrorBytes bounds an error message in an answer, a REST body's or a
// gRPC status's.
const MaxErrorBytes = 4 << 10

// writeError answers {"error": "..."} with err's status.
func writeError(w http.ResponseWriter, err error) int {
	return writeQueryError(w, "", err)
}

// writeQueryError answers {"error": "...", "query_id": "..."} with err's
// status: the id is the one the proxy logged the failure with. An empty id
// is left out.
func writeQueryError(w http.ResponseWriter, id string, err error) int {
	status := statusOf(err)
	var tooLarge *http.MaxBytesError
	// Names from the request are clipped where a message is formatted;
	// this bounds the whole, for any text that was not.
	msg := clip.To(err.Error(), MaxErrorBytes)
	if errors.As(err, &tooLarge) {
		msg = "request body exceeds the limit of " + itoa(tooLarge.Limit) + " bytes"
	}
	b := appendString(append(make([]byte, 0, len(msg)+len(id)+32), `{"error":`...), msg)
	if id != "" {
		b = appendString(append(b, `,"query_id":`...), id)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	if shed := (*shedError)(nil); errors.As(err, &shed) {
		w.Header().Set("Retry-After", retryAfter(shed.retryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}
