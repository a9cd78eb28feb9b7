package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/sloproxy/sloproxy/internal/jsonstrict"
)

// decode reads r's body, at most maxBodyBytes of one JSON object, into v.
// Unknown fields are errors, so that a misspelt field is reported rather
// than silently left at its default.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	err := jsonstrict.Decode(http.MaxBytesReader(w, r.Body, maxBodyBytes), v)
	switch {
	case errors.Is(err, jsonstrict.ErrTrailing):
		return badRequest("request body: must hold one JSON object, found more after it")
	case err != nil:
		return bodyError(err)
	}
	return nil
}

// bodyError turns a decoding error into an answer that names the problem.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "request body: larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("request body: empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body: truncated JSON")
	case errors.As(err, &syntax):
		return badRequest("request body: malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ) && typ.Field != "":
		return badRequest("request body: field %q: want a JSON %s, got a JSON %s", typ.Field, jsonKind(typ.Type), typ.Value)
	case errors.As(err, &typ):
		return badRequest("request body: want a JSON object, got a JSON %s", typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no type for this error; its message names the field.
		return badRequest("request body: %s", strings.TrimPrefix(err.Error(), "json: "))
	default:
		return badRequest("request body: %v", err)
	}
}

// writeJSON answers v as indented JSON (the API is read by people with
// curl as much as by programs) with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		// Only a bug can get here: the wire types always encode.
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error": "encoding the answer failed"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "number"
}
