package state

import (
	"errors"
	"fmt"
)

// Errors returned by the Store, wrapped with %w in errors whose message
// names the object and field at fault; test them with errors.Is. The admin
// API maps them to 404, 409, 400 and 503.
var (
	// ErrNotFound: the app, model, version or link does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change is well formed but contradicts the state, such
	// as deleting the current version of a linked model, or linking an app
	// to a model of another input type.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the change is malformed, such as a bad name or a
	// non-positive SLO.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: the backend could not be reached or stayed contended;
	// the change was not made (or, after a lost reply, may have been: the
	// mutations are idempotent, so retrying is safe).
	ErrUnavailable = errors.New("state backend unavailable")
)

func notFound(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotFound, fmt.Sprintf(format, args...))
}

func conflict(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConflict, fmt.Sprintf(format, args...))
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// errNoChange, returned by a mutation, means the state already is as asked:
// nothing is written and the revision stays.
var errNoChange = errors.New("no change")
