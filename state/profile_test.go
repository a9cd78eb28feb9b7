package state_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// TestProfiles stores a profile with a version on every backend, reads it
// from a second Store over the same storage (another proxy), and checks
// that deleting the version deletes its profile.
func TestProfiles(t *testing.T) {
	for _, kind := range backendKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			newBackend := kind.open(t)
			s := startStore(t, newBackend(), state.Options{})
			ctx := t.Context()
			v := version("m", "1", state.InputFloat32)
			v.ExampleInput = json.RawMessage(`[1, 2.5]`)
			must(t, s.PutVersion(ctx, v))
			must(t, s.PutVersion(ctx, version("m", "2", state.InputFloat32)))
			p := state.Profile{At: time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC), Replicas: 2, Input: "example",
				A: 20 * time.Millisecond, B: 2 * time.Millisecond, Tail: 1500 * time.Microsecond,
				Lines: []state.ProfileLine{{Batch: 1, Samples: 10, P50: 22 * time.Millisecond, P99: 23500 * time.Microsecond, Throughput: 45.2}}}
			must(t, s.SetProfile(ctx, "m", "1", p))
			if err := s.SetProfile(ctx, "m", "9", p); !errors.Is(err, state.ErrNotFound) {
				t.Errorf("SetProfile of a missing version: %v, want ErrNotFound", err)
			}

			other := startStore(t, newBackend(), state.Options{})
			got, ok := other.Snapshot().Profile("m", "1")
			if !ok || !reflect.DeepEqual(got, p) {
				t.Fatalf("another Store reads profile %+v, %v; want %+v", got, ok, p)
			}
			if mv, _ := other.Snapshot().Version("m", "1"); string(mv.ExampleInput) != `[1,2.5]` && string(mv.ExampleInput) != `[1, 2.5]` {
				t.Errorf("example input %s, want [1, 2.5]", mv.ExampleInput)
			}
			must(t, s.DeleteVersion(ctx, "m", "1"))
			if _, ok := s.Snapshot().Profile("m", "1"); ok {
				t.Errorf("the profile outlived its version")
			}
		})
	}
}

func TestProfileLargest(t *testing.T) {
	p := state.Profile{A: 20 * time.Millisecond, B: 2 * time.Millisecond, Tail: 2 * time.Millisecond}
	for _, c := range []struct {
		slo   time.Duration
		limit int
		want  int
	}{
		{80 * time.Millisecond, 64, 29}, // 20 + 2·29 + 2 = 80
		{80 * time.Millisecond, 16, 16},
		{23 * time.Millisecond, 64, 0},
		{24 * time.Millisecond, 64, 1},
		{10 * time.Millisecond, 64, 0},
	} {
		if got := p.Largest(c.slo, c.limit); got != c.want {
			t.Errorf("Largest(%v, %d) = %d, want %d", c.slo, c.limit, got, c.want)
		}
	}
}

func TestExampleInputMustBeJSON(t *testing.T) {
	v := version("m", "1", state.InputFloat32)
	v.ExampleInput = json.RawMessage(`[1,`)
	if err := v.Validate(); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("Validate: %v, want ErrInvalid naming example_input", err)
	}
}
