package state_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

func TestValidName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"0", true},
		{"mnist-v2.onnx_1", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{".a", false},
		{"_a", false},
		{"Mnist", false},
		{"a b", false},
		{"a/b", false},
		{"a:b", false},
		{"é", false},
	}
	for _, c := range cases {
		if got := state.ValidName(c.name); got != c.ok {
			t.Errorf("ValidName(%q) = %v; want %v", c.name, got, c.ok)
		}
	}
}

func TestRuntimeSpecValidate(t *testing.T) {
	cases := []struct {
		name    string
		spec    state.RuntimeSpec
		message string // empty: valid
	}{
		{"process", state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"m"}, Env: map[string]string{"A": "1"}}, ""},
		{"external", state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"10.0.0.1:7000", "[::1]:7001", "model.svc:7000"}}, ""},
		{"docker", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m:1", Env: map[string]string{"A": "1"}, CPUs: 1.5, MemoryBytes: 1 << 30, GPUs: -1}, ""},
		{"docker with device ids", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m:1", DeviceIDs: []string{"0", "1"}}, ""},
		{"no kind", state.RuntimeSpec{}, `runtime.kind ""`},
		{"process empty command", state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{""}}, "runtime.command"},
		{"process with gpus", state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"m"}, GPUs: 1}, "runtime.gpus: not used by the process runtime"},
		{"external with command", state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"h:1"}, Command: []string{"m"}}, "runtime.command: not used"},
		{"external without port", state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"h"}}, "runtime.addresses"},
		{"external port 0", state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"h:0"}}, "port"},
		{"external empty host", state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{":7000"}}, "host"},
		{"docker with addresses", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m", Addresses: []string{"h:1"}}, "runtime.addresses: not used"},
		{"docker negative cpus", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m", CPUs: -1}, "runtime.cpus"},
		{"docker negative memory", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m", MemoryBytes: -1}, "runtime.memory_bytes"},
		{"docker gpus -2", state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m", GPUs: -2}, "runtime.gpus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.spec.Validate()
			if c.message == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), c.message) {
				t.Fatalf("Validate: error = %v; want ErrInvalid mentioning %q", err, c.message)
			}
		})
	}
}

func TestModelVersionValidateMessage(t *testing.T) {
	v := version("m", "1", state.InputBytes)
	v.Runtime.Command = nil
	err := v.Validate()
	const want = `invalid: model "m" version "1": runtime.command: required for the process runtime`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v; want %s", err, want)
	}
}

func TestAppJSON(t *testing.T) {
	cases := []struct {
		slo  time.Duration
		json string
	}{
		{20 * time.Millisecond, `"slo_ms":20`},
		{1500 * time.Microsecond, `"slo_ms":1.5`},
		{123456789 * time.Nanosecond, `"slo_ms":123.456789`},
	}
	for _, c := range cases {
		a := state.App{Name: "a", InputType: state.InputBytes, SLO: c.slo, Priority: 1}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), c.json) || strings.Contains(string(b), `"SLO"`) {
			t.Errorf("Marshal(SLO %v) = %s; want it to contain %s", c.slo, b, c.json)
		}
		var back state.App
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, a) {
			t.Errorf("round trip of %+v gave %+v", a, back)
		}
	}
	var a state.App
	if err := json.Unmarshal([]byte(`{"name":"x","input_type":"string","slo_ms":100,"default_output":"none"}`), &a); err != nil {
		t.Fatal(err)
	}
	want := state.App{Name: "x", InputType: state.InputString, SLO: 100 * time.Millisecond, DefaultOutput: "none"}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("Unmarshal = %+v; want %+v", a, want)
	}
	if err := json.Unmarshal([]byte(`{"name":"x","input_type":"string","slo_ms":1e300}`), &a); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("an absurd SLO validated: %v", err)
	}

	// The cache settings: TTL in fractional seconds, the opt-out.
	c := state.App{Name: "c", InputType: state.InputBytes, SLO: time.Second, CacheTTL: 1500 * time.Millisecond, NoCache: true}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"cache_ttl_s":1.5`) || !strings.Contains(string(b), `"no_cache":true`) {
		t.Errorf("Marshal(%+v) = %s", c, b)
	}
	var back state.App
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("round trip of %+v gave %+v (%v)", c, back, err)
	}
	c.CacheTTL = -time.Second
	if err := c.Validate(); !errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), "cache_ttl_s") {
		t.Errorf("a negative cache TTL: %v, want an error naming cache_ttl_s", err)
	}
}

func TestAppInputs(t *testing.T) {
	parts := func(pp ...state.InputPart) []state.InputPart { return pp }
	cases := []struct {
		name   string
		it     state.InputType
		inputs []state.InputPart
		err    string // "" for valid
	}{
		{"none", state.InputBytes, nil, ""},
		{"two parts", state.InputFloat32, parts(state.InputPart{Name: "dense", Size: 4}, state.InputPart{Name: "user_features", Size: 64}), ""},
		{"triton names", state.InputInt32, parts(state.InputPart{Name: "INPUT__0", Size: 1}, state.InputPart{Name: "in:1", Size: 2}), ""},
		{"bytes input", state.InputBytes, parts(state.InputPart{Name: "a", Size: 1}), "an input of type bytes has no layout"},
		{"empty", state.InputFloat64, []state.InputPart{}, "inputs: 0 parts; list 1 to 256"},
		{"too many", state.InputFloat64, make([]state.InputPart, 257), "inputs: 257 parts; list 1 to 256"},
		{"too many values", state.InputFloat64, parts(state.InputPart{Name: "a", Size: 1 << 20}, state.InputPart{Name: "b", Size: 1}), "more than 1048576 values in all"},
		{"a long bad name", state.InputFloat64, parts(state.InputPart{Name: strings.Repeat("é", 1000), Size: 1}), "ééé…"},
		{"no name", state.InputFloat64, parts(state.InputPart{Name: "", Size: 1}), `inputs[0]: name ""`},
		{"bad name", state.InputFloat64, parts(state.InputPart{Name: "a b", Size: 1}), `inputs[0]: name "a b"`},
		{"digit first", state.InputFloat64, parts(state.InputPart{Name: "0a", Size: 1}), `inputs[0]: name "0a"`},
		{"size 0", state.InputFloat64, parts(state.InputPart{Name: "a", Size: 0}), `inputs[0] "a": size 0`},
		{"huge size", state.InputFloat64, parts(state.InputPart{Name: "a", Size: 1 << 21}), "size 2097152: must be between 1 and 1048576"},
		{"twice", state.InputFloat64, parts(state.InputPart{Name: "a", Size: 1}, state.InputPart{Name: "a", Size: 2}), `inputs[1]: "a" is listed twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := state.App{Name: "a", InputType: c.it, SLO: time.Second, Inputs: c.inputs}.Validate()
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case c.err != "" && (!errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("Validate = %v; want ErrInvalid with %q", err, c.err)
			}
		})
	}
	a := state.App{Name: "a", InputType: state.InputFloat32, SLO: time.Second,
		Inputs: parts(state.InputPart{Name: "x", Size: 3}, state.InputPart{Name: "y", Size: 2}, state.InputPart{Name: "z", Size: 1})}
	if p, off, ok := a.Part("z"); !ok || p.Size != 1 || off != 5 {
		t.Errorf("Part(z) = %+v, %d, %v; want size 1 at 5", p, off, ok)
	}
	if _, _, ok := a.Part("w"); ok {
		t.Error("Part(w) found a part the layout does not have")
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back state.App
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, a) {
		t.Errorf("round trip of %s gave %+v, %v", b, back, err)
	}
}
