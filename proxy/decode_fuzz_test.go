package proxy

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sloproxy/sloproxy/state"
)

// fuzzBodyLimit is the body limit the decoders are fuzzed under: small,
// so that shapes past it are cheap to find.
const fuzzBodyLimit = 1 << 16

var fuzzInputTypes = []state.InputType{state.InputBytes, state.InputInt32, state.InputFloat32, state.InputFloat64, state.InputString}

// fuzzLayouts are the layouts requests are checked against: one input of
// every type, and for numeric types two named parts, with and without
// the second filled by features looked up by an "id" input.
var fuzzLayouts = func() []inferLayout {
	var ls []inferLayout
	for _, it := range fuzzInputTypes {
		ls = append(ls, inferLayout{it: it})
		if it != state.InputBytes && it != state.InputString {
			parts := []state.InputPart{{Name: "x", Size: 2}, {Name: "y", Size: 1}}
			ls = append(ls, newLayout(it, parts, "", nil), newLayout(it, parts, "y", []string{"id"}))
		}
	}
	return ls
}()

// The seeds below are valid and invalid bodies of each kind; the failures
// found in the past are files under testdata/fuzz/FuzzDecode*. To search
// for more, run for minutes on demand:
//
//	go test -run '^$' -fuzz '^FuzzDecodeInfer$' -fuzztime 5m ./proxy
//	go test -run '^$' -fuzz '^FuzzDecodePredict$' -fuzztime 5m ./proxy

// FuzzDecodeInfer feeds any body to the OIP infer decoder, for every
// input type: it never panics; it accepts only a UTF-8 body with exactly shape[0]
// rows, within the batch limit, each no larger than the body could hold;
// and it refuses everything else as the caller's bad input.
func FuzzDecodeInfer(f *testing.F) {
	for _, seed := range []string{
		`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}`,
		`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP64","data":[[1,2],[3,4]]}]}`,
		`{"inputs":[{"name":"x","shape":[1,3],"datatype":"INT32","data":[1,2,3]}],"outputs":[{"name":"output"}]}`,
		`{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}]}`,
		`{"inputs":[{"name":"x","shape":[0],"datatype":"BYTES","data":[]}]}`,
		`{"inputs":[{"name":"x","shape":[0,5],"datatype":"FP32","data":[]}]}`,
		`{"inputs":[{"name":"x","shape":[3,0],"datatype":"FP32","data":[]}]}`,
		`{"inputs":[{"name":"x","shape":[9223372036854775807,2],"datatype":"FP32","data":[]}]}`,
		`{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}`,
		`{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a\ud800"]}]}`,
		`{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[[[[[1]]]]]}]}`,
		`{"inputs":[],"parameters":{"timeout":5}}`,
		`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]},{"name":"y","shape":[2,1],"datatype":"FP32","data":[5,6]}]}`,
		`{"inputs":[{"name":"y","shape":[1,1],"datatype":"INT32","data":[5]},{"name":"x","shape":[1,2],"datatype":"INT32","data":[1,2]}]}`,
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1,2]},{"name":"x","shape":[1,2],"datatype":"FP64","data":[1,2]}]}`,
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"id","shape":[1],"datatype":"BYTES","data":["7"]}]}`,
		`[]`, `null`, `{}`,
	} {
		f.Add([]byte(seed))
	}
	p := &Proxy{opts: Options{MaxBodyBytes: fuzzBodyLimit, MaxInputBatch: 64}}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > fuzzBodyLimit {
			return // readBody refuses it first
		}
		for _, l := range fuzzLayouts {
			it := l.it
			req, err := p.decodeInfer(body)
			var items [][]byte
			if err == nil {
				items, _, err = p.inferRows(req, l)
			}
			if err != nil {
				if !errors.Is(err, ErrBadInput) {
					t.Fatalf("%s %q: error %v is not ErrBadInput", it, body, err)
				}
				continue
			}
			if !utf8.Valid(body) {
				t.Fatalf("%s %q: accepted a body that is not UTF-8", it, body)
			}
			if rows := req.Inputs[0].Shape[0]; int64(len(items)) != rows || rows > 64 {
				t.Fatalf("%s %q: %d rows for shape %v", it, body, len(items), req.Inputs[0].Shape)
			}
			for i, item := range items {
				if it != state.InputBytes && it != state.InputString && len(item)%it.ElemSize() != 0 {
					t.Fatalf("%s %q: row %d has %d bytes", it, body, i, len(item))
				}
				if w := l.width() * it.ElemSize(); l.carried != nil && len(item) != w {
					t.Fatalf("%+v %q: row %d has %d bytes; the layout makes %d", l, body, i, len(item), w)
				}
				if len(item) > 8*len(body) {
					t.Fatalf("%s %q: row %d has %d bytes from a %d-byte body", it, body, i, len(item), len(body))
				}
			}
		}
	})
}

// FuzzDecodePredict feeds any body to the query API's decoder, for apps
// of every input type: it never panics; it accepts only a UTF-8 body of
// one input or a batch within the limit, and refuses everything else as bad input.
func FuzzDecodePredict(f *testing.F) {
	for _, seed := range []string{
		`{"input": "hello"}`, `{"input": [1, 2.5, -3]}`, `{"input": "aGVsbG8="}`,
		`{"input_batch": ["a", "b"]}`, `{"input_batch": [[1], [2, 3]]}`, `{"input_batch": []}`,
		`{"input": "a", "input_batch": ["b"]}`, `{}`, `null`, `[]`, `{"input": null}`,
		`{"input": "\udc00\ud800"}`, `{"input": "\ud83d\ude00"}`,
		`{"input": [1e400]}`, `{"input": [2147483648]}`,
	} {
		f.Add([]byte(seed))
	}
	p := &Proxy{opts: Options{MaxBodyBytes: fuzzBodyLimit, MaxInputBatch: 64}}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > fuzzBodyLimit {
			return
		}
		for _, it := range fuzzInputTypes {
			app := state.App{Name: "a", InputType: it, SLO: time.Second}
			batch, inputs, _, err := p.decodePredict(body, app, nil)
			if err != nil {
				if !errors.Is(err, ErrBadInput) {
					t.Fatalf("%s %q: error %v is not ErrBadInput", it, body, err)
				}
				continue
			}
			if !utf8.Valid(body) {
				t.Fatalf("%s %q: accepted a body that is not UTF-8", it, body)
			}
			if len(inputs) == 0 || len(inputs) > 64 || !batch && len(inputs) != 1 {
				t.Fatalf("%s %q: %d inputs (batch %v)", it, body, len(inputs), batch)
			}
		}
	})
}
