// Package jsonstrict decodes one JSON value strictly: an object field the
// target does not have, or anything but space after the value, is an
// error, so that a misspelt field is reported rather than silently left
// at its default.
package jsonstrict

import (
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailing is the error for data after the value.
var ErrTrailing = errors.New("data after the object")

// Decode reads one JSON value from r into v. Its errors are those of
// encoding/json, ErrTrailing, or r's own.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	_, err := dec.Token()
	var syntax *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil || errors.As(err, &syntax):
		return ErrTrailing
	}
	return err
}
