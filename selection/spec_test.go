package selection

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name, raw string
		want      Spec
		err       string
	}{
		{name: "canary with a guard", raw: `{"policy": "weighted", "shares": {"knn": 9, "knn:2": 1}, "seed": 3,
			"guard": {"canary": "knn:2", "window_s": 30, "min_queries": 50, "min_attainment": 0.95, "max_error_rate": 0.01}}`,
			want: Spec{Policy: NameWeighted, Shares: map[string]float64{"knn": 9, "knn:2": 1}, Seed: 3,
				Guard: Guard{Canary: "knn:2", Window: 30 * time.Second, MinQueries: 50, MinAttainment: 0.95, MaxErrorRate: 0.01}}},
		{name: "exp4 over numbers", raw: `{"policy": "exp4", "output": "number", "eta": 0.5, "shadow": "cand"}`,
			want: Spec{Policy: NameExp4, Output: Number, Eta: 0.5, Shadow: "cand"}},
		{name: "no policy", raw: `{"shares": {"a": 1}}`, err: `no "policy"`},
		{name: "unknown policy", raw: `{"policy": "ucb"}`, err: `policy "ucb": must be single, weighted, exp3 or exp4`},
		{name: "misspelt field", raw: `{"policy": "exp3", "gama": 0.2}`, err: `unknown field "gama"`},
		{name: "weighted without shares", raw: `{"policy": "weighted"}`, err: "weighted needs shares"},
		{name: "negative share", raw: `{"policy": "weighted", "shares": {"a": -1, "b": 1}}`, err: `shares["a"] -1`},
		{name: "canary not a share", raw: `{"policy": "weighted", "shares": {"a": 1}, "guard": {"canary": "b"}}`, err: `guard.canary "b"`},
		{name: "negative window", raw: `{"policy": "weighted", "shares": {"a": 1, "b": 1}, "guard": {"canary": "b", "window_s": -1}}`, err: "guard.window_s -1"},
		{name: "guard without a canary", raw: `{"policy": "weighted", "shares": {"a": 1, "b": 1}, "guard": {"min_attainment": 0.9}}`, err: "guard.canary: required"},
		{name: "gamma above 1", raw: `{"policy": "exp3", "gamma": 2}`, err: "gamma 2"},
		{name: "not an object", raw: `[1]`, err: "not a selection spec"},
		{name: "two objects", raw: `{"policy": "exp3"} {}`, err: "data after the object"},
		{name: "a stray brace after it", raw: `{"policy": "exp3"} }`, err: "data after the object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpec([]byte(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			raw, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := ParseSpec(raw); err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip through %s: %+v, %v", raw, back, err)
			}
		})
	}
}

func TestCheckArms(t *testing.T) {
	s := Spec{Policy: NameWeighted, Shares: map[string]float64{"knn": 1, "knn:2": 1}, Shadow: "tree"}
	if err := s.CheckArms([]string{"knn", "tree"}); err != nil {
		t.Errorf("every arm linked: %v", err)
	}
	if err := s.CheckArms([]string{"knn"}); err == nil || !strings.Contains(err.Error(), `shadow "tree"`) {
		t.Errorf("shadow not linked: %v", err)
	}
	if err := s.CheckArms([]string{"tree"}); err == nil || !strings.Contains(err.Error(), `shares["knn"]`) {
		t.Errorf("share not linked: %v", err)
	}
}

// TestStoredSpecComesFirst: an app's stored spec (the admin API's) wins
// over the configuration's, which wins over the policy name's defaults;
// each policy is rebuilt only when its spec changes.
func TestStoredSpecComesFirst(t *testing.T) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameExp3, Gamma: 0.3}})
	ctx := context.Background()
	if st := tab.Status(ctx, "a", NameExp3, nil, []string{"m"}); st.Source != FromConfig || st.Spec.Gamma != 0.3 {
		t.Errorf("configured: %+v", st)
	}
	if st := tab.Status(ctx, "b", NameExp4, nil, []string{"m"}); st.Source != FromDefaults || st.Spec.Policy != NameExp4 || st.Spec.Eta != DefaultEnsembleEta {
		t.Errorf("by name: %+v", st)
	}
	stored := []byte(`{"policy":"weighted","shares":{"m":1,"m:2":3}}`)
	p, spec := tab.Get("a", NameExp3, stored)
	if _, ok := p.(*Weighted); !ok || spec.Shares["m:2"] != 3 {
		t.Fatalf("stored: %T %+v", p, spec)
	}
	if again, _ := tab.Get("a", NameExp3, []byte(string(stored))); again != p {
		t.Error("the same stored spec rebuilt the policy")
	}
	if st := tab.Status(ctx, "a", NameExp3, stored, []string{"m"}); st.Source != FromAdmin || st.Policy != NameWeighted {
		t.Errorf("stored: %+v", st)
	}
	if back, _ := tab.Get("a", NameExp3, nil); back == p {
		t.Error("without the stored spec the app kept its policy")
	}
	if p, _ := tab.Get("c", "", []byte(`{"policy":"bogus"}`)); p != (Single{}) {
		t.Errorf("an invalid stored spec gave %T; want Single", p)
	}
}

// FuzzParseSpec: any body gives a spec or an error, never a panic; a spec
// it accepts is valid and survives a round trip.
func FuzzParseSpec(f *testing.F) {
	for _, seed := range []string{
		`{"policy": "weighted", "shares": {"knn": 9, "knn:2": 1}, "guard": {"canary": "knn:2", "window_s": 30, "min_attainment": 0.95}}`,
		`{"policy": "exp4", "output": "number", "eta": 0.5, "shadow": "cand", "seed": 7}`,
		`{"policy": "exp3", "gamma": 1e308, "gap": -0}`,
		`{"policy": "weighted", "shares": {"a": 1e309}}`,
		`{"policy": "weighted", "shares": {"a": 1}, "guard": {"canary": "a", "window_s": 1e300}}`,
		`{}`, `null`, `[]`, `{"policy": "single"} x`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := ParseSpec(raw)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted an invalid spec %+v: %v", s, err)
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal %+v: %v", s, err)
		}
		back, err := ParseSpec(out)
		if err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", out, back, err, s)
		}
	})
}

// TestConfigSpecIsForItsPolicy: the configuration's spec tunes the app's
// policy only when it names the same one; otherwise the app runs the
// policy it names, with its defaults.
func TestConfigSpecIsForItsPolicy(t *testing.T) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameExp3, Gamma: 0.3}, "b": {Gamma: 0.2}})
	ctx := context.Background()
	tests := []struct {
		app, policy string
		source      Source
		want        string
		gamma       float64
	}{
		{"a", NameExp3, FromConfig, NameExp3, 0.3},
		{"a", NameExp4, FromDefaults, NameExp4, DefaultGamma},
		{"b", "", FromConfig, NameSingle, 0.2},
		{"b", NameSingle, FromConfig, NameSingle, 0.2},
	}
	for _, tt := range tests {
		st := tab.Status(ctx, tt.app, tt.policy, nil, []string{"m"})
		if st.Source != tt.source || st.Spec.Policy != tt.want || st.Spec.Gamma != tt.gamma {
			t.Errorf("app %s, policy %q: %s %s gamma %v; want %s %s gamma %v", tt.app, tt.policy, st.Source, st.Spec.Policy, st.Spec.Gamma, tt.source, tt.want, tt.gamma)
		}
	}
}

// BenchmarkTableGet is what every query pays to find its app's policy:
// a configured spec, and a stored one.
func BenchmarkTableGet(b *testing.B) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameWeighted, Shares: map[string]float64{"m": 9, "m:2": 1}}})
	stored := []byte(`{"policy":"exp3","gamma":0.2}`)
	b.Run("config", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.Get("a", NameWeighted, nil)
		}
	})
	b.Run("stored", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.Get("b", "", stored)
		}
	})
}
