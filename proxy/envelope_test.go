package proxy

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzEnvelopeMatchesJSON checks the envelope scanner against
// encoding/json: wherever the scanner decides a body, encoding/json
// decodes it without error to the same "input" and the same
// "input_batch" elements.
func FuzzEnvelopeMatchesJSON(f *testing.F) {
	for _, seed := range []string{
		`{"input": [1, 2.5, -3]}`, `{"input":"x"}`, `{ "input" : null }`, `{"input_batch": [[1], [2, 3]]}`,
		`{"input_batch": null}`, `{"input_batch": "x"}`, `{"input_batch": []}`, `{"Input": [1]}`, `{"in\u0070ut": [1]}`,
		`{"input": [1], "input": [2]}`, `{"other": {"input": [1]}, "input": [3]}`, `{}`, `[]`, `null`, `{"input": [1]`,
		`{"input_batch": [ "a" , {"b": [1, "]"]} ]}`, `{"INPUT_BATCH": [1]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, ok := scanEnvelope(body)
		if !ok {
			return
		}
		var req struct {
			Input      json.RawMessage   `json:"input"`
			InputBatch []json.RawMessage `json:"input_batch"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("%q: the scanner decided a body encoding/json refuses: %v", body, err)
		}
		if !bytes.Equal(e.input, req.Input) || (e.input == nil) != (req.Input == nil) {
			t.Fatalf("%q: input %q, encoding/json %q", body, e.input, req.Input)
		}
		if (e.batch == nil) != (req.InputBatch == nil) {
			t.Fatalf("%q: batch %q, encoding/json %q", body, e.batch, req.InputBatch)
		}
		if e.batch == nil {
			return
		}
		var elems [][]byte
		_ = eachElement(e.batch, func(_ int, elem []byte) error { elems = append(elems, elem); return nil })
		if len(elems) != len(req.InputBatch) {
			t.Fatalf("%q: %d elements, encoding/json %d", body, len(elems), len(req.InputBatch))
		}
		for i := range elems {
			if !bytes.Equal(elems[i], req.InputBatch[i]) {
				t.Fatalf("%q: element %d %q, encoding/json %q", body, i, elems[i], req.InputBatch[i])
			}
		}
	})
}

// TestScanEnvelopeDecides lists what the scanner decides itself and what
// it leaves to encoding/json.
func TestScanEnvelopeDecides(t *testing.T) {
	for _, c := range []struct {
		body  string
		ok    bool
		input string
		batch string
	}{
		{`{"input": [1, 2]}`, true, `[1, 2]`, ``},
		{` { "input" : "x" , "other" : {"input": 1} } `, true, `"x"`, ``},
		{`{"input_batch": [[1], [2]]}`, true, ``, `[[1], [2]]`},
		{`{"input_batch": null}`, true, ``, ``},
		{`{}`, true, ``, ``},
		{`{"Input": [1]}`, false, ``, ``},
		{`{"inp\u0075t": [1]}`, false, ``, ``},
		{`{"input": [1], "input": [2]}`, false, ``, ``},
		{`{"input_batch": 1}`, false, ``, ``},
		{`[1]`, false, ``, ``},
		{`{"input": [1]`, false, ``, ``},
	} {
		e, ok := scanEnvelope([]byte(c.body))
		if ok != c.ok || string(e.input) != c.input || string(e.batch) != c.batch {
			t.Errorf("%s: %v %q %q; want %v %q %q", c.body, ok, e.input, e.batch, c.ok, c.input, c.batch)
		}
	}
}
