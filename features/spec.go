// Package features assembles a query's full model input from a feature
// store before the prediction cache and the model see it: an app declares
// a Redis key template built from request fields ("user:{user_id}"), the
// hash fields to read in order, their types and defaults, what a missing
// entity gets, and where the values go in the model's input. A query then
// carries the entity ids and only its request-time features.
//
// The lookups of one request's queries go to Redis as one pipelined round
// trip (HMGET per entity), bounded by the spec's Timeout and by the
// query's own deadline, so that their time is spent from the query's SLO
// budget and admission sees what is left. A Redis that is slow or down
// makes every query of the request follow the missing-entity policy
// within Timeout: never a late answer. The store's client must bound each
// call by its context (go-redis' ContextTimeoutEnabled), as the clients
// the serve command and Table dial do.
package features

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/internal/jsonstrict"
	"github.com/sloproxy/sloproxy/state"
)

// Missing is what a query whose entity is not in the store gets.
type Missing string

// The missing-entity policies.
const (
	// UseDefaults fills every field with its default.
	UseDefaults Missing = "use_defaults"
	// NotFound answers the query with a not-found error (HTTP 404, gRPC
	// NOT_FOUND).
	NotFound Missing = "not_found"
	// DefaultOutput answers the query with the app's default output,
	// flagged, with the reason.
	DefaultOutput Missing = "default_output"
)

// Placements of the looked-up values in the model's input.
const (
	// Append puts them after the request's own values.
	Append = "append"
	// Prepend puts them before the request's own values.
	Prepend = "prepend"
)

// Field types: how a hash field's text is read.
const (
	TypeFloat = "float" // any number
	TypeInt   = "int"   // an integer
	TypeBool  = "bool"  // 0, 1, true or false; 0 or 1 in the model's input
)

// DefaultTimeout bounds a lookup whose spec sets no Timeout.
const DefaultTimeout = 10 * time.Millisecond

// Spec is an app's feature lookup. The zero value of each field has the
// meaning its comment gives.
type Spec struct {
	// Key is the Redis key of a query's entity, with request fields in
	// braces: "user:{user_id}". Required, with at least one field.
	Key string `json:"key" yaml:"key"`
	// Fields are the hash fields read, in the order their values enter
	// the model's input. Required.
	Fields []Field `json:"fields" yaml:"fields"`
	// Missing is what a query gets when its entity is not in the store,
	// when a field without a default is absent, or when the store does
	// not answer within Timeout. "" means UseDefaults, which requires
	// every field to have a default.
	Missing Missing `json:"missing,omitempty" yaml:"missing"`
	// Into is where the values go in the model's input of an app without
	// a layout: Append or Prepend. "" means Append.
	Into string `json:"into,omitempty" yaml:"into"`
	// Input names the part of the app's input layout (state.App.Inputs)
	// the values fill: the request carries the other parts, and the
	// values go between them. The part's size must be the number of
	// Fields. An app with a layout requires it, one without refuses it.
	Input string `json:"input,omitempty" yaml:"input"`
	// Timeout bounds the store's round trip. 0 means DefaultTimeout. In
	// JSON it is "timeout_ms", a number of milliseconds that may have a
	// fraction.
	Timeout time.Duration `json:"-" yaml:"timeout"`
	// Redis is the feature store's address (host:port), when it is not
	// the proxy's own Redis. "" means the proxy's.
	Redis string `json:"redis,omitempty" yaml:"redis"`
}

// specJSON is Spec's JSON form: the timeout in fractional milliseconds.
type specJSON struct {
	specFields
	TimeoutMillis float64 `json:"timeout_ms,omitempty"`
}

// specFields has Spec's fields without its methods, so that encoding them
// does not recurse into Spec.MarshalJSON.
type specFields Spec

// MarshalJSON encodes the timeout as "timeout_ms".
func (s Spec) MarshalJSON() ([]byte, error) {
	return json.Marshal(specJSON{specFields: specFields(s), TimeoutMillis: float64(s.Timeout) / float64(time.Millisecond)})
}

// UnmarshalJSON reads s from its JSON form, refusing unknown fields and
// data after the object; it does not validate s (Validate does).
func (s *Spec) UnmarshalJSON(raw []byte) error {
	var j specJSON
	if err := jsonstrict.Decode(bytes.NewReader(raw), &j); err != nil {
		return fmt.Errorf("not a features spec: %w", err)
	}
	if j.TimeoutMillis < 0 || j.TimeoutMillis > float64(time.Hour/time.Millisecond) {
		return fmt.Errorf("features.timeout_ms %v: must be between 0 and an hour", j.TimeoutMillis)
	}
	*s = Spec(j.specFields)
	s.Timeout = time.Duration(j.TimeoutMillis * float64(time.Millisecond))
	return nil
}

// ParseSpec reads a spec from its JSON form, as the admin API stores it,
// and validates it for app.
func ParseSpec(raw []byte, app state.App) (Spec, error) {
	var s Spec
	if err := s.UnmarshalJSON(raw); err != nil {
		return Spec{}, err
	}
	if err := s.Validate(app); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Field is one hash field of an entity.
type Field struct {
	// Name is the hash field's name.
	Name string `json:"name" yaml:"name"`
	// Type is how its text is read: TypeFloat, TypeInt or TypeBool. ""
	// means TypeFloat.
	Type string `json:"type,omitempty" yaml:"type"`
	// Default is its value when the entity or the field is missing. nil
	// means none: such a miss follows the spec's Missing policy.
	Default *float64 `json:"default,omitempty" yaml:"default"`
}

// placeholder matches one request field in a key template.
var placeholder = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// KeyFields returns the request fields the key template names, in order,
// each once.
func (s *Spec) KeyFields() []string {
	var names []string
	seen := map[string]bool{}
	for _, m := range placeholder.FindAllStringSubmatch(s.Key, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names
}

// maxKeyFields bounds the request fields of a key template: an entity is
// named by a few ids, never by many.
const maxKeyFields = 16

// Validate checks s for app: its input type and layout. The error names
// the field at fault.
func (s *Spec) Validate(app state.App) error {
	it := app.InputType
	switch it {
	case state.InputFloat32, state.InputFloat64, state.InputInt32:
	default:
		return fmt.Errorf("features: the app's input type %s is not numeric; looked-up features need float32, float64 or int32", it)
	}
	switch n := len(s.KeyFields()); {
	case n == 0:
		return fmt.Errorf("features.key %q names no request field; write one as {field}", clip.String(s.Key))
	case n > maxKeyFields:
		return fmt.Errorf("features.key %q names %d request fields; at most %d", clip.String(s.Key), n, maxKeyFields)
	}
	if rest := placeholder.ReplaceAllString(s.Key, ""); strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("features.key %q: a brace that opens no {field} of letters, digits and _", clip.String(s.Key))
	}
	if len(s.Fields) == 0 {
		return errors.New("features.fields: none; list the hash fields to read")
	}
	seen := map[string]bool{}
	for i, f := range s.Fields {
		switch {
		case f.Name == "":
			return fmt.Errorf("features.fields[%d]: no name", i)
		case seen[f.Name]:
			return fmt.Errorf("features.fields[%d]: %q is listed twice", i, clip.String(f.Name))
		case f.Type != "" && f.Type != TypeFloat && f.Type != TypeInt && f.Type != TypeBool:
			return fmt.Errorf("features.fields[%d] %q: type %q; use float, int or bool", i, clip.String(f.Name), clip.String(f.Type))
		case it == state.InputInt32 && (f.Type == "" || f.Type == TypeFloat):
			return fmt.Errorf("features.fields[%d] %q: a float field cannot enter an int32 input; use type int or bool", i, clip.String(f.Name))
		case s.missing() == UseDefaults && f.Default == nil:
			return fmt.Errorf("features.fields[%d] %q: no default, which missing: use_defaults needs", i, clip.String(f.Name))
		}
		seen[f.Name] = true
	}
	switch s.missing() {
	case UseDefaults, NotFound, DefaultOutput:
	default:
		return fmt.Errorf("features.missing %q; use use_defaults, not_found or default_output", clip.String(string(s.Missing)))
	}
	if s.Into != "" && s.Into != Append && s.Into != Prepend {
		return fmt.Errorf("features.into %q; use append or prepend", clip.String(s.Into))
	}
	if err := s.validateInput(app); err != nil {
		return err
	}
	if s.Timeout < 0 {
		return fmt.Errorf("features.timeout %v is negative", s.Timeout)
	}
	return nil
}

// validateInput checks s.Input against app's layout: an app with one
// takes its features into a part of it, named by Input, whose size is the
// number of fields. No key field may share a part's name, as an OIP
// request would carry both under it.
func (s *Spec) validateInput(app state.App) error {
	for _, k := range s.KeyFields() {
		if _, _, ok := app.Part(k); ok {
			return fmt.Errorf("features.key field %q is also a part of app %q's inputs; an OIP input cannot be both", clip.String(k), app.Name)
		}
	}
	if s.Input == "" {
		if app.Inputs != nil {
			return fmt.Errorf("features.input: none, and app %q lays its input out as parts (%s); add the part the features fill to its inputs and name it here", app.Name, partNames(app))
		}
		return nil
	}
	if s.Into != "" {
		return fmt.Errorf("features.input %q and features.into %q: into is for apps without inputs; remove it", clip.String(s.Input), clip.String(s.Into))
	}
	part, _, ok := app.Part(s.Input)
	switch {
	case !ok && app.Inputs == nil:
		return fmt.Errorf("features.input %q: app %q declares no inputs; list them under its inputs, or use into", clip.String(s.Input), app.Name)
	case !ok:
		return fmt.Errorf("features.input %q: app %q has no such input; its inputs are %s", clip.String(s.Input), app.Name, partNames(app))
	case part.Size != len(s.Fields):
		return fmt.Errorf("features.input %q holds %d values, and features.fields lists %d; make them equal", s.Input, part.Size, len(s.Fields))
	}
	return nil
}

// partNames lists the names of app's input parts, clipped.
func partNames(app state.App) string {
	names := make([]string, len(app.Inputs))
	for i, p := range app.Inputs {
		names[i] = p.Name
	}
	return clip.String(strings.Join(names, ", "))
}

func (s *Spec) missing() Missing {
	if s.Missing == "" {
		return UseDefaults
	}
	return s.Missing
}

func (s *Spec) timeout() time.Duration {
	if s.Timeout <= 0 {
		return DefaultTimeout
	}
	return s.Timeout
}
