package features

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
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
	layout := func(parts ...state.InputPart) []state.InputPart { return parts }
	for _, tc := range []struct {
		name   string
		edit   func(*Spec)
		it     state.InputType
		inputs []state.InputPart
		want   string
	}{
		{"good", func(*Spec) {}, state.InputFloat64, nil, ""},
		{"string app", func(*Spec) {}, state.InputString, nil, "not numeric"},
		{"no field in key", func(s *Spec) { s.Key = "user" }, state.InputFloat64, nil, "names no request field"},
		{"stray brace", func(s *Spec) { s.Key = "user:{user_id}:{" }, state.InputFloat64, nil, "a brace"},
		{"no fields", func(s *Spec) { s.Fields = nil }, state.InputFloat64, nil, "features.fields: none"},
		{"twice", func(s *Spec) { s.Fields = append(s.Fields, s.Fields[0]) }, state.InputFloat64, nil, "listed twice"},
		{"bad type", func(s *Spec) { s.Fields = []Field{{Name: "a", Type: "string", Default: zero()}} }, state.InputFloat64, nil, `type "string"`},
		{"float into int32", func(*Spec) {}, state.InputInt32, nil, "cannot enter an int32 input"},
		{"use_defaults without one", func(s *Spec) { s.Fields = []Field{{Name: "a"}} }, state.InputFloat64, nil, "no default"},
		{"not_found without one", func(s *Spec) { s.Fields, s.Missing = []Field{{Name: "a"}}, NotFound }, state.InputFloat64, nil, ""},
		{"bad policy", func(s *Spec) { s.Missing = "drop" }, state.InputFloat64, nil, `features.missing "drop"`},
		{"bad into", func(s *Spec) { s.Into = "middle" }, state.InputFloat64, nil, `features.into "middle"`},
		{"negative timeout", func(s *Spec) { s.Timeout = -time.Millisecond }, state.InputFloat64, nil, "negative"},
		{"a named input", func(s *Spec) { s.Input = "user" }, state.InputFloat64, layout(state.InputPart{Name: "dense", Size: 3}, state.InputPart{Name: "user", Size: 2}), ""},
		{"a layout, appended", func(*Spec) {}, state.InputFloat64, layout(state.InputPart{Name: "dense", Size: 3}), `features.input: none, and app "app" lays its input out as parts (dense)`},
		{"a layout, prepended", func(s *Spec) { s.Into = Prepend }, state.InputFloat64, layout(state.InputPart{Name: "dense", Size: 3}), "features.input: none"},
		{"no layout", func(s *Spec) { s.Input = "user" }, state.InputFloat64, nil, `features.input "user": app "app" declares no inputs`},
		{"not in the layout", func(s *Spec) { s.Input = "user" }, state.InputFloat64, layout(state.InputPart{Name: "dense", Size: 3}, state.InputPart{Name: "tail", Size: 1}), "has no such input; its inputs are dense, tail"},
		{"input and into", func(s *Spec) { s.Input, s.Into = "user", Append }, state.InputFloat64, layout(state.InputPart{Name: "user", Size: 2}), "into is for apps without inputs"},
		{"many key fields", func(s *Spec) { s.Key = "u:{a}{b}{c}{d}{e}{f}{g}{h}{i}{j}{k}{l}{m}{n}{o}{p}{q}" }, state.InputFloat64, nil, "names 17 request fields; at most 16"},
		{"input of another size", func(s *Spec) { s.Input = "user" }, state.InputFloat64, layout(state.InputPart{Name: "user", Size: 3}), `features.input "user" holds 3 values, and features.fields lists 2`},
		{"key field in the layout", func(*Spec) {}, state.InputFloat64, layout(state.InputPart{Name: "region", Size: 1}), `features.key field "region" is also a part`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			s.Fields = append([]Field(nil), ok.Fields...)
			tc.edit(&s)
			err := s.Validate(state.App{Name: "app", InputType: tc.it, Inputs: tc.inputs})
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
	// Int32 values are 4 bytes: "aaaa" is one value.
	app := state.App{Name: "app", InputType: state.InputInt32,
		Inputs: []state.InputPart{{Name: "head", Size: 1}, {Name: "fx", Size: 1}, {Name: "tail", Size: 2}}}
	for _, tc := range []struct {
		into, input string
		want        string
	}{
		{Prepend, "", "FFFFaaaabbbbcccc"},
		{"", "", "aaaabbbbccccFFFF"},
		{Append, "", "aaaabbbbccccFFFF"},
		{"", "fx", "aaaaFFFFbbbbcccc"},
		{"", "head", "FFFFaaaabbbbcccc"},
	} {
		l.spec.Into, l.spec.Input = tc.into, tc.input
		if got := l.placedIn(app).Assemble([]byte("aaaabbbbcccc"), []byte("FFFF")); string(got) != tc.want {
			t.Errorf("into %q, input %q: %s; want %s", tc.into, tc.input, got, tc.want)
		}
	}
}

func TestSpecJSON(t *testing.T) {
	in := Spec{Key: "user:{id}", Fields: []Field{{Name: "a", Type: TypeInt, Default: zero()}}, Missing: NotFound, Into: Prepend, Timeout: 2500 * time.Microsecond, Redis: "h:1"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"timeout_ms":2.5`) {
		t.Fatalf("%s: want the timeout as timeout_ms", raw)
	}
	out, err := ParseSpec(raw, state.App{Name: "a", InputType: state.InputInt32})
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v, %v; want %+v", out, err, in)
	}
	for _, tc := range []struct{ raw, want string }{
		{`{"key": "u:{id}", "fields": [{"name": "a", "default": 0}], "timeout": 5}`, `unknown field "timeout"`},
		{`{"key": "u:{id}", "fields": [{"name": "a", "default": 0}]} {}`, "data after the object"},
		{`{"key": "u:{id}", "fields": [{"name": "a", "default": 0}], "timeout_ms": 1e300}`, "between 0 and an hour"},
		{`{"key": "u:{id}", "fields": [{"name": "a"}]}`, `"a": no default`},
		{`[]`, "not a features spec"},
	} {
		if _, err := ParseSpec([]byte(tc.raw), state.App{Name: "a", InputType: state.InputFloat32}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.raw, err, tc.want)
		}
	}
}

// TestTableFitsTheFileSpec: the configuration file's spec is checked
// against the app as the state has it, which the admin API may have
// changed since the file was read.
func TestTableFitsTheFileSpec(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	spec := Spec{Key: "user:{id}", Fields: []Field{{Name: "a", Default: zero()}, {Name: "b", Default: zero()}}, Input: "user", Redis: "127.0.0.1:1"}
	if err := table.Set(map[string]Spec{"a": spec}); err != nil {
		t.Fatal(err)
	}
	fits := state.App{Name: "a", InputType: state.InputFloat32, Inputs: []state.InputPart{{Name: "dense", Size: 3}, {Name: "user", Size: 2}}}
	l := table.For(fits)
	if l == nil || l.broken != nil {
		t.Fatalf("a layout that fits: %+v", l)
	}
	if again := table.For(fits); again != l {
		t.Fatal("the same app was checked into a new lookup")
	}
	for _, tc := range []struct {
		name   string
		inputs []state.InputPart
		why    string
	}{
		{"a part of another size", []state.InputPart{{Name: "user", Size: 3}}, `features.input "user" holds 3 values, and features.fields lists 2`},
		{"a part named as a key field", []state.InputPart{{Name: "user", Size: 2}, {Name: "id", Size: 1}}, `features.key field "id" is also a part`},
		{"no layout", nil, `features.input "user": app "a" declares no inputs`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fits
			app.Inputs = tc.inputs
			l := table.For(app)
			if l == nil || l.broken == nil || !strings.Contains(l.broken.Error(), "the configuration file's features spec does not fit the app's input: "+tc.why) {
				t.Fatalf("%+v; want a broken lookup saying %s", l, tc.why)
			}
			rows := l.Fetch(t.Context(), time.Now().Add(time.Minute), app.InputType, [][]string{{"1"}})
			if rows[0].Outcome != StoreUnavailable || !strings.Contains(rows[0].Why, tc.why) {
				t.Fatalf("rows %+v; want unavailable, saying %s", rows, tc.why)
			}
		})
	}
	if l := table.For(fits); l == nil || l.broken != nil {
		t.Fatalf("the layout that fits again: %+v", l)
	}
	// A reload that changes the spec is checked anew: one that fits the
	// app the last one did not.
	narrow := fits
	narrow.Inputs = []state.InputPart{{Name: "user", Size: 1}}
	if l := table.For(narrow); l.broken == nil {
		t.Fatal("a two-field spec fit a part of one value")
	}
	spec.Fields = spec.Fields[:1]
	if err := table.Set(map[string]Spec{"a": spec}); err != nil {
		t.Fatal(err)
	}
	if l := table.For(narrow); l == nil || l.broken != nil {
		t.Fatalf("after the reload, a one-field spec for a part of one value: %+v", l)
	}
}

// TestTableFor: a spec the state carries takes the place of the
// configuration file's, is rebuilt only when its text or the app's input
// type changes, and one that cannot serve here answers every query
// unavailable (or with the default output, under default_output) with
// why.
func TestTableFor(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	if err := table.Set(map[string]Spec{"a": {Key: "cfg:{id}", Fields: []Field{{Name: "x", Default: zero()}}, Redis: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	app := state.App{Name: "a", InputType: state.InputFloat32}
	if l := table.For(app); l == nil || l.KeyFields()[0] != "id" {
		t.Fatalf("configured: %+v", l)
	}
	app.Features = json.RawMessage(`{"key": "acct:{account}", "fields": [{"name": "y", "default": 1}], "redis": "127.0.0.1:1"}`)
	stored := table.For(app)
	if stored == nil || stored.KeyFields()[0] != "account" || stored.broken != nil {
		t.Fatalf("stored: %+v", stored)
	}
	if again := table.For(app); again != stored {
		t.Fatal("the same stored spec was built twice")
	}
	int32App := app
	int32App.InputType = state.InputInt32
	if l := table.For(int32App); l == stored || l.broken == nil || !strings.Contains(l.broken.Error(), "cannot enter an int32 input") {
		t.Fatalf("the same spec for an int32 app: %+v; want it rebuilt, and refused", l)
	}
	if l := table.For(state.App{Name: "b"}); l != nil {
		t.Fatalf("an app without features: %+v", l)
	}
	for _, tc := range []struct {
		name, raw string
		it        state.InputType
		outcome   Outcome
		why       string
	}{
		{"no proxy Redis", `{"key": "u:{id}", "fields": [{"name": "y", "default": 1}]}`, state.InputFloat32, StoreUnavailable, "the proxy has no Redis"},
		{"a string app", `{"key": "u:{id}", "fields": [{"name": "y", "default": 1}], "redis": "h:1", "missing": "default_output"}`, state.InputString, UseDefaultOutput, "not numeric"},
		{"a float field into int32", `{"key": "u:{id}", "fields": [{"name": "y"}], "redis": "h:1", "missing": "not_found"}`, state.InputInt32, StoreUnavailable, "cannot enter an int32 input"},
		{"under default_output", `{"key": "u:{id}", "fields": [{"name": "y"}], "missing": "default_output"}`, state.InputFloat32, UseDefaultOutput, "the proxy has no Redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := table.For(state.App{Name: tc.name, InputType: tc.it, Features: json.RawMessage(tc.raw)})
			rows := l.Fetch(t.Context(), time.Now().Add(time.Minute), tc.it, [][]string{{"1"}, {"2"}})
			for _, r := range rows {
				if r.Outcome != tc.outcome || !strings.Contains(r.Why, tc.why) || r.Values != nil {
					t.Fatalf("%+v; want outcome %d with %q", r, tc.outcome, tc.why)
				}
			}
		})
	}
}

// TestTableClosesUnusedClients: a store no spec names any more, after a
// reload or a change through the admin API, is closed.
func TestTableClosesUnusedClients(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	clients := func() []string {
		table.changing.Lock()
		defer table.changing.Unlock()
		return slices.Sorted(maps.Keys(table.clients))
	}
	spec := func(addr string) Spec {
		return Spec{Key: "u:{id}", Fields: []Field{{Name: "x", Default: zero()}}, Redis: addr}
	}
	if err := table.Set(map[string]Spec{"a": spec("127.0.0.1:1"), "b": spec("127.0.0.1:2")}); err != nil {
		t.Fatal(err)
	}
	app := state.App{Name: "c", InputType: state.InputFloat32, Features: json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x", "default": 0}], "redis": "127.0.0.1:3"}`)}
	table.For(app)
	if got := strings.Join(clients(), " "); got != "127.0.0.1:1 127.0.0.1:2 127.0.0.1:3" {
		t.Fatalf("clients %s", got)
	}
	if err := table.Set(map[string]Spec{"a": spec("127.0.0.1:1")}); err != nil {
		t.Fatal(err)
	}
	app.Features = json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x", "default": 0}], "redis": "127.0.0.1:1"}`)
	table.For(app)
	if got := strings.Join(clients(), " "); got != "127.0.0.1:1" {
		t.Fatalf("after a reload and a new stored spec: clients %s; want the one still named", got)
	}
	app.Features = nil
	table.For(app)
	if err := table.Set(nil); err != nil {
		t.Fatal(err)
	}
	if got := clients(); len(got) != 0 {
		t.Fatalf("with no spec left: clients %v", got)
	}
}

// TestPruneClosesDeletedAppsClients: an app deleted with a stored spec
// takes its lookup and its store's client with it.
func TestPruneClosesDeletedAppsClients(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	store := state.NewStore(nil, state.Options{})
	app := state.App{Name: "c", InputType: state.InputFloat32, SLO: time.Second}
	if err := store.PutApp(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	app.Features = json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x", "default": 0}], "redis": "127.0.0.1:3"}`)
	table.For(app)
	table.Prune(store.Snapshot())
	if _, ok := table.entries.Load("c"); !ok {
		t.Fatal("an app the state has lost its lookup")
	}
	if err := store.DeleteApp(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	table.Prune(store.Snapshot())
	table.changing.Lock()
	defer table.changing.Unlock()
	if _, ok := table.entries.Load("c"); ok || len(table.clients) != 0 {
		t.Fatalf("after the app's deletion: entry %v, clients %v; want neither", ok, table.clients)
	}
}
