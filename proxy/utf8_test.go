package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/state"
)

// TestStringInputsAreUnicode checks that a string input reaches the model
// as the client sent it or is refused with the offset of the problem:
// never turned into U+FFFD.
func TestStringInputsAreUnicode(t *testing.T) {
	p := &Proxy{opts: Options{MaxBodyBytes: 1 << 20, MaxInputBatch: 8}}
	app := state.App{Name: "echo", InputType: state.InputString}
	cases := []struct {
		body string
		want string // the input the model gets; "" when refused
		err  string // a part of the error
	}{
		{`{"input": "héllo"}`, "héllo", ""},
		{`{"input": "\u00e9\ud83d\ude00"}`, "é😀", ""},
		{`{"input": "\\ud800"}`, `\ud800`, ""}, // an escaped backslash, not an escape
		{`{"input": "\ufffd"}`, "\ufffd", ""},
		{"{\"input\": \"a\xffb\"}", "", "byte 12 (0xff)"},
		{"{\"input\": \"\xc3\"}", "", "byte 11 (0xc3)"},
		{"{\"input\": \"ok\"}\xed\xa0\x80", "", "byte 15 (0xed)"}, // a surrogate encoded in UTF-8
		{`{"input": "a\ud800b"}`, "", `\ud800 at byte 2`},
		{`{"input": "\udc00\ud800"}`, "", `\udc00 at byte 1`},
		{`{"input": "\ud800\u0041"}`, "", `\ud800 at byte 1`},
		{`{"input_batch": ["ok", "x\ud83d"]}`, "", `input_batch[1]: the escape \ud83d`},
	}
	for _, c := range cases {
		_, inputs, _, err := p.decodePredict([]byte(c.body), app, nil)
		if c.err == "" {
			if err != nil || len(inputs) != 1 || string(inputs[0]) != c.want {
				t.Errorf("%q: %q, %v; want %q", c.body, inputs, err, c.want)
			}
			continue
		}
		if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: error %v, want bad input naming %q", c.body, err, c.err)
		}
	}
}
