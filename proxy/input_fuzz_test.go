package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/sloproxy/sloproxy/state"
)

// FuzzEncodeInput checks the allocation-free array parser against
// encoding/json: for any valid JSON, a float64 input is accepted exactly
// when it is an array of numbers in float64's range, with the same values.
func FuzzEncodeInput(f *testing.F) {
	for _, seed := range []string{
		`[]`, `[1]`, `[1.5, -2e3, 0]`, ` [ 1 , 2 ] `, `[1,"two"]`, `[null]`, `[[1]]`, `[{"a":[1,2]}]`,
		`["a\"]", 1]`, `"str"`, `{}`, `[true,false]`, `[1e400]`, `[-0]`, `[1,]`, `1`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // the body's decoder rejects it before encodeInput runs
		}
		got, err := encodeInput(raw, state.InputFloat64, "input")
		// The oracle: a JSON array whose elements are all numbers within
		// float64's range (encoding/json would also turn null into 0,
		// which the proxy refuses as not a number).
		var elems []any
		werr := json.Unmarshal(raw, &elems)
		if trimmed := bytes.TrimSpace(raw); werr == nil && (len(trimmed) == 0 || trimmed[0] != '[') {
			werr = errors.New("not an array") // null decodes into a nil slice
		}
		want := make([]float64, 0, len(elems))
		for _, e := range elems {
			v, ok := e.(float64)
			if !ok {
				werr = errors.New("not a number")
				break
			}
			want = append(want, v)
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: parser error %v, encoding/json error %v", raw, err, werr)
		}
		if err != nil {
			return
		}
		if len(got) != 8*len(want) {
			t.Fatalf("%q: %d bytes for %d numbers", raw, len(got), len(want))
		}
		for i, v := range want {
			if g := math.Float64frombits(binary.LittleEndian.Uint64(got[8*i:])); g != v {
				t.Fatalf("%q: element %d is %v, want %v", raw, i, g, v)
			}
		}
	})
}
