package profile_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/containers/profile"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRecoversCostModel profiles a real cost model process whose batch of
// n takes 20 ms + 2 ms·n and checks that the fitted a and b are within
// 15% of those, and that each line is what the model's cost says.
func TestRecoversCostModel(t *testing.T) {
	const a, b = 20 * time.Millisecond, 2 * time.Millisecond
	cm := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--a", a.String(), "--b", b.String()})
	p, err := profile.Run(t.Context(), []string{cm.Addr}, profile.Options{
		InputType: rpc.Float32, Inputs: [][]byte{make([]byte, 16)}, MaxBatch: 32, Repeats: 7, Warmup: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a = %v, b = %v, tail = %v", p.A, p.B, p.Tail)
	for _, l := range p.Lines {
		t.Logf("batch %2d: min %v p50 %v p99 %v, %.1f/s (%d samples)", l.Batch, l.Min, l.P50, l.P99, l.Throughput, l.Samples)
	}
	if got := batches(p.Lines); !slices.Equal(got, []int{1, 2, 4, 8, 16, 32}) {
		t.Errorf("batch sizes %v, want 1 2 4 8 16 32", got)
	}
	within := func(what string, got, want time.Duration) {
		if d := got - want; d < -want*15/100 || d > want*15/100 {
			t.Errorf("%s = %v, want %v ± 15%%", what, got, want)
		}
	}
	within("a", p.A, a)
	within("b", p.B, b)
	if p.Replicas != 1 || p.ItemErrors != 0 {
		t.Errorf("replicas %d, item errors %d; want 1 and 0", p.Replicas, p.ItemErrors)
	}
	for _, l := range p.Lines {
		if l.Samples != 7 || l.Min < a+b*time.Duration(l.Batch) || l.P50 < l.Min || l.P99 < l.P50 || l.Throughput <= 0 {
			t.Errorf("line %+v: want 7 samples, min ≥ the model's cost, min ≤ p50 ≤ p99, a throughput", l)
		}
	}
}

func batches(lines []state.ProfileLine) []int {
	var out []int
	for _, l := range lines {
		out = append(out, l.Batch)
	}
	return out
}

func TestSizes(t *testing.T) {
	for _, c := range []struct {
		limit int
		want  []int
	}{
		{1, []int{1}},
		{2, []int{1, 2}},
		{32, []int{1, 2, 4, 8, 16, 32}},
		{12, []int{1, 2, 4, 8, 12}},
	} {
		if got := profile.Sizes(c.limit); !slices.Equal(got, c.want) {
			t.Errorf("Sizes(%d) = %v, want %v", c.limit, got, c.want)
		}
	}
}

// TestErrors checks that a profile with nothing to drive says why.
func TestErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		addrs []string
		opts  profile.Options
		want  string
	}{
		{"no replica", nil, profile.Options{Inputs: [][]byte{{}}, MaxBatch: 1}, "no live replica"},
		{"no input", []string{"127.0.0.1:1"}, profile.Options{MaxBatch: 1}, "no input"},
		{"unreachable", []string{testutil.FreeAddr(t)}, profile.Options{Inputs: [][]byte{{}}, MaxBatch: 1, BatchTimeout: 300 * time.Millisecond}, "connect"},
	} {
		_, err := profile.Run(t.Context(), c.addrs, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
	}
}

// TestProfileRefused: a replica that refuses every input fails the profile
// with state.ErrInvalid (the admin API's 400: profiling again fails the
// same way); one that cannot be reached, with state.ErrUnavailable (503).
func TestProfileRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refuse := rpc.ModelFunc(func(context.Context, [][]byte) ([]rpc.Output, error) {
		return nil, errors.New("input of 4 bytes: want 16")
	})
	srv := rpc.NewServer(refuse, rpc.ServerOptions{Hello: rpc.Hello{InputType: rpc.Float32, MaxBatch: 2}})
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ctx, ln)
	}()
	defer func() { cancel(); <-served }()

	p := profile.Profiler{
		Encode:       func(json.RawMessage, state.InputType) ([]byte, error) { return make([]byte, 4), nil },
		DefaultBatch: 2,
		Options:      profile.Options{Warmup: 1, BatchTimeout: 500 * time.Millisecond},
	}
	v := state.ModelVersion{Model: "m", Version: "1", InputType: state.InputFloat32, Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal}}
	inputs := []json.RawMessage{json.RawMessage(`[1]`)}
	_, err = p.Profile(t.Context(), v, []string{ln.Addr().String()}, inputs, 1)
	if !errors.Is(err, state.ErrInvalid) || errors.Is(err, state.ErrUnavailable) || !strings.Contains(err.Error(), "want 16") {
		t.Errorf("a replica refusing the input: %v; want state.ErrInvalid with the model's message", err)
	}
	_, err = p.Profile(t.Context(), v, []string{testutil.FreeAddr(t)}, inputs, 1)
	if !errors.Is(err, state.ErrUnavailable) || errors.Is(err, state.ErrInvalid) {
		t.Errorf("an unreachable replica: %v; want state.ErrUnavailable", err)
	}
}
