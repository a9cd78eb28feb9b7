package jsonstrict

import (
	"errors"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type target struct {
		A int `json:"a"`
	}
	for _, tc := range []struct {
		in   string
		want string // "" for no error
	}{
		{`{"a": 1}`, ""},
		{` {"a": 1}  `, ""},
		{`{"b": 1}`, `unknown field "b"`},
		{`{"a": 1} {}`, "data after the object"},
		{`{"a": 1} x`, "data after the object"},
		{`{"a": `, "unexpected EOF"},
		{`{"a": "x"}`, "cannot unmarshal"},
	} {
		var v target
		err := Decode(strings.NewReader(tc.in), &v)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v; want %q", tc.in, err, tc.want)
		}
	}
	if err := Decode(strings.NewReader(`{} 1`), &target{}); !errors.Is(err, ErrTrailing) {
		t.Errorf("trailing data: %v; want ErrTrailing", err)
	}
}
