package proxy

import (
	"bytes"
	"encoding/json"
)

// envelope is the query API's body, {"input": …} or {"input_batch": […]},
// as spans of the body: input is the raw value of "input", batch the raw
// array of "input_batch"; nil where the key is absent (or, for
// "input_batch", null).
type envelope struct {
	input []byte
	batch []byte
	// entity and entityBatch are "entity" and "entity_batch", the ids an
	// app with features looks its features up by. Only encoding/json
	// decodes them: scanEnvelope leaves a body with either key to it.
	entity      map[string]string
	entityBatch []map[string]string
}

// scanEnvelope finds the envelope's fields in body without reflection and
// without allocating. It decides only the bodies whose meaning is plain: a
// valid JSON object whose keys have no escapes, each of "input" and
// "input_batch" at most once and spelled exactly, "input_batch" an array
// or null. For anything else (another top-level value, a key encoding/json
// would match by case-folding or after unescaping, a duplicate key, a
// non-array batch) it returns false, and the caller decodes the body with
// encoding/json, whose meaning and errors it keeps
// (FuzzEnvelopeMatchesJSON checks that both agree).
func scanEnvelope(body []byte) (envelope, bool) {
	var e envelope
	if !json.Valid(body) {
		return envelope{}, false
	}
	p := skipSpace(body, 0)
	if p >= len(body) || body[p] != '{' {
		return envelope{}, false
	}
	p = skipSpace(body, p+1)
	if body[p] == '}' {
		return e, true
	}
	var seenInput, seenBatch bool
	for {
		// body is valid JSON: a key string, a colon, a value, then , or }.
		end := p + 1
		for body[end] != '"' {
			if body[end] == '\\' {
				return envelope{}, false
			}
			end++
		}
		key := body[p+1 : end]
		p = skipSpace(body, skipSpace(body, end+1)+1) // past the colon
		vend, err := skipValue(body, p)
		if err != nil {
			return envelope{}, false
		}
		val := body[p:vend]
		switch {
		case string(key) == "input":
			if seenInput {
				return envelope{}, false
			}
			seenInput, e.input = true, val
		case string(key) == "input_batch":
			if seenBatch {
				return envelope{}, false
			}
			seenBatch = true
			switch val[0] {
			case '[':
				e.batch = val
			case 'n': // null: as if absent, as encoding/json decodes a nil slice
			default:
				return envelope{}, false
			}
		case bytes.EqualFold(key, []byte("input")), bytes.EqualFold(key, []byte("input_batch")),
			bytes.EqualFold(key, []byte("entity")), bytes.EqualFold(key, []byte("entity_batch")):
			return envelope{}, false
		}
		p = skipSpace(body, vend)
		if body[p] == '}' {
			return e, true
		}
		p = skipSpace(body, p+1) // past the comma
	}
}

// predictRequest is the query API's body as encoding/json decodes it:
// exactly one of the two input fields.
type predictRequest struct {
	Input      json.RawMessage   `json:"input"`
	InputBatch []json.RawMessage `json:"input_batch"`
	// Entity and EntityBatch carry the request fields that an app with
	// features builds its lookup keys from: one object for "input", one
	// per input of "input_batch".
	Entity      map[string]string   `json:"entity"`
	EntityBatch []map[string]string `json:"entity_batch"`
}

// decodeEnvelope decodes body as the query API's envelope: with
// scanEnvelope where it decides, else with encoding/json.
func decodeEnvelope(body []byte) (envelope, error) {
	if e, ok := scanEnvelope(body); ok {
		return e, nil
	}
	var req predictRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return envelope{}, errorf(ErrBadInput, "body is not the JSON object {\"input\": ...} or {\"input_batch\": [...]}: %v", err)
	}
	e := envelope{input: req.Input, entity: req.Entity, entityBatch: req.EntityBatch}
	if req.InputBatch != nil {
		b := []byte{'['}
		for i, elem := range req.InputBatch {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, elem...)
		}
		e.batch = append(b, ']')
	}
	return e, nil
}

// eachElement calls f with the raw text of each element of the JSON array
// raw, which is valid JSON, without allocating.
func eachElement(raw []byte, f func(i int, elem []byte) error) error {
	p := skipSpace(raw, 1)
	if raw[p] == ']' {
		return nil
	}
	for i := 0; ; i++ {
		end, err := skipValue(raw, p)
		if err != nil {
			return errNotArray
		}
		if err := f(i, raw[p:end]); err != nil {
			return err
		}
		p = skipSpace(raw, end)
		if raw[p] == ']' {
			return nil
		}
		p = skipSpace(raw, p+1)
	}
}
