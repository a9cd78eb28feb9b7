package features

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func zero() *float64 { v := 0.0; return &v }

func TestValidate(t *testing.T) {
	ok := Spec{Key: "user:{user_id}:{region}", Fields: []Field{{Name: "a", Default: zero()}, {Name: "b", Type: TypeBool, Default: zero()}}}
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		it   state.InputType
		want string
	}{
		{"good", func(*Spec) {}, state.InputFloat64, ""},
		{"string app", func(*Spec) {}, state.InputString, "not numeric"},
		{"no field in key", func(s *Spec) { s.Key = "user" }, state.InputFloat64, "names no request field"},
		{"stray brace", func(s *Spec) { s.Key = "user:{user_id}:{" }, state.InputFloat64, "a brace"},
		{"no fields", func(s *Spec) { s.Fields = nil }, state.InputFloat64, "features.fields: none"},
		{"twice", func(s *Spec) { s.Fields = append(s.Fields, s.Fields[0]) }, state.InputFloat64, "listed twice"},
		{"bad type", func(s *Spec) { s.Fields = []Field{{Name: "a", Type: "string", Default: zero()}} }, state.InputFloat64, `type "string"`},
		{"float into int32", func(*Spec) {}, state.InputInt32, "cannot enter an int32 input"},
		{"use_defaults without one", func(s *Spec) { s.Fields = []Field{{Name: "a"}} }, state.InputFloat64, "no default"},
		{"not_found without one", func(s *Spec) { s.Fields, s.Missing = []Field{{Name: "a"}}, NotFound }, state.InputFloat64, ""},
		{"bad policy", func(s *Spec) { s.Missing = "drop" }, state.InputFloat64, `features.missing "drop"`},
		{"bad into", func(s *Spec) { s.Into = "middle" }, state.InputFloat64, `features.into "middle"`},
		{"negative timeout", func(s *Spec) { s.Timeout = -time.Millisecond }, state.InputFloat64, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			s.Fields = append([]Field(nil), ok.Fields...)
			tc.edit(&s)
			err := s.Validate(tc.it)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestKeyAndAssemble(t *testing.T) {
	s := Spec{Key: "u:{id}:{region}:{id}", Fields: []Field{{Name: "a"}}, Into: Prepend}
	l := newLookup("app", s, nil, nil)
	if got := strings.Join(l.keys, ","); got != "id,region" {
		t.Fatalf("key fields %s", got)
	}
	if got := l.key([]string{"7", "eu"}); got != "u:7:eu:7" {
		t.Fatalf("key %s", got)
	}
	if got := string(l.Assemble([]byte("in"), []byte("fx"))); got != "fxin" {
		t.Fatalf("prepend: %s", got)
	}
	l.spec.Into = ""
	if got := string(l.Assemble([]byte("in"), []byte("fx"))); got != "infx" {
		t.Fatalf("append: %s", got)
	}
}
