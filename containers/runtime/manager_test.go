package runtime_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRuntime records what the Manager asks of it: a fake is enough here,
// since what is under test is the Manager's reconciling, not starting
// processes (package process tests that with real ones).
type fakeRuntime struct {
	mu      sync.Mutex
	running map[runtime.VersionKey]int // replicas per version
	removed []runtime.VersionKey
	fail    bool // Ensure fails while set
}

func newFake() *fakeRuntime { return &fakeRuntime{running: map[runtime.VersionKey]int{}} }

func (f *fakeRuntime) Ensure(_ context.Context, mv state.ModelVersion) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, fmt.Errorf("injected failure")
	}
	n := max(mv.Replicas, 1)
	f.running[runtime.VersionKey{Model: mv.Model, Version: mv.Version}] = n
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", 9000+i)
	}
	return addrs, nil
}

func (f *fakeRuntime) Remove(_ context.Context, model, version string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := runtime.VersionKey{Model: model, Version: version}
	delete(f.running, k)
	f.removed = append(f.removed, k)
	return nil
}

func (f *fakeRuntime) Running(context.Context) ([]runtime.VersionKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []runtime.VersionKey
	for k := range f.running {
		keys = append(keys, k)
	}
	return keys, nil
}

func (f *fakeRuntime) setFail(v bool) {
	f.mu.Lock()
	f.fail = v
	f.mu.Unlock()
}

func (f *fakeRuntime) wasRemoved(k runtime.VersionKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.removed, k)
}

func processVersion(model, version string, replicas int) state.ModelVersion {
	return state.ModelVersion{Model: model, Version: version, InputType: state.InputBytes,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/bin/model"}}, Replicas: replicas}
}

func TestManagerFollowsTheState(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	fake := newFake()
	// A version of a kind this Manager does not manage stays untouched.
	ext := state.ModelVersion{Model: "remote", Version: "1", InputType: state.InputBytes,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"10.0.0.1:7000"}}, Replicas: 1}
	for _, mv := range []state.ModelVersion{processVersion("m", "1", 2), ext} {
		if err := store.PutVersion(ctx, mv); err != nil {
			t.Fatal(err)
		}
	}
	// A leftover the runtime runs that the state does not know.
	fake.running[runtime.VersionKey{Model: "gone", Version: "1"}] = 1

	m := runtime.NewManager(store, runtime.Options{Runtimes: map[state.RuntimeKind]runtime.Runtime{state.RuntimeProcess: fake}, Interval: time.Hour})
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	replicas := func(model, version string) []string { return store.Snapshot().Replicas(model, version) }
	testutil.Eventually(t, 5*time.Second, "m:1's two replicas registered", func() bool { return len(replicas("m", "1")) == 2 })
	if !fake.wasRemoved(runtime.VersionKey{Model: "gone", Version: "1"}) {
		t.Error("the version unknown to the state was not removed")
	}
	if got := replicas("remote", "1"); !slices.Equal(got, []string{"10.0.0.1:7000"}) && len(got) != 0 {
		t.Errorf("the external version's replicas were changed to %v", got)
	}

	// A change of the state reaches the runtime without waiting for the
	// interval: scale, add a version, delete one.
	v := processVersion("m", "1", 3)
	if err := store.PutVersion(ctx, v); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "m:1 scaled to three", func() bool { return len(replicas("m", "1")) == 3 })
	if err := store.PutVersion(ctx, processVersion("m", "2", 1)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "m:2 registered", func() bool { return len(replicas("m", "2")) == 1 })
	if err := store.DeleteVersion(ctx, "m", "1"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "m:1 removed", func() bool { return fake.wasRemoved(runtime.VersionKey{Model: "m", Version: "1"}) })
}

func TestManagerRetriesFailures(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	fake := newFake()
	fake.setFail(true)
	if err := store.PutVersion(ctx, processVersion("m", "1", 1)); err != nil {
		t.Fatal(err)
	}
	m := runtime.NewManager(store, runtime.Options{Runtimes: map[state.RuntimeKind]runtime.Runtime{state.RuntimeProcess: fake}, Interval: 10 * time.Millisecond})
	if err := m.Reconcile(ctx); err == nil {
		t.Fatal("Reconcile returned nil while Ensure fails")
	}
	if p := m.Problem("m", "1"); !strings.Contains(p, "injected failure") {
		t.Errorf("Problem = %q while Ensure fails, want its error", p)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fake.setFail(false)
	testutil.Eventually(t, 5*time.Second, "registered on a later pass", func() bool { return len(store.Snapshot().Replicas("m", "1")) == 1 })
	if p := m.Problem("m", "1"); p != "" {
		t.Errorf("Problem = %q after a successful pass, want none", p)
	}
	if err := m.Start(ctx); err == nil {
		t.Error("a second Start returned nil")
	}
}

// notifying is a runtime whose replica's address changes on its own, as a
// docker container replaced after a crash does, and which says so.
type notifying struct {
	mu      sync.Mutex
	addr    string
	changed chan struct{}
}

func (n *notifying) Ensure(context.Context, state.ModelVersion) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return []string{n.addr}, nil
}

func (n *notifying) Remove(context.Context, string, string) error { return nil }

func (n *notifying) Running(context.Context) ([]runtime.VersionKey, error) { return nil, nil }

func (n *notifying) Changed() <-chan struct{} { return n.changed }

func (n *notifying) set(addr string) {
	n.mu.Lock()
	n.addr = addr
	n.mu.Unlock()
	n.changed <- struct{}{}
}

func TestManagerPassOnRuntimeChange(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	n := &notifying{addr: "127.0.0.1:9001", changed: make(chan struct{})}
	// An interval that never comes: only the runtime's signal can cause
	// the second registration.
	m := runtime.NewManager(store, runtime.Options{Runtimes: map[state.RuntimeKind]runtime.Runtime{state.RuntimeDocker: n}, Interval: time.Hour})
	if err := store.PutVersion(ctx, state.ModelVersion{Model: "m", Version: "1", InputType: state.InputBytes, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "m:1"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	registered := func(addr string) func() bool {
		return func() bool { return slices.Equal(store.Snapshot().Replicas("m", "1"), []string{addr}) }
	}
	testutil.Eventually(t, 5*time.Second, "the first address registered", registered("127.0.0.1:9001"))
	n.set("127.0.0.1:9002")
	testutil.Eventually(t, 5*time.Second, "the new address registered after the runtime's signal", registered("127.0.0.1:9002"))
}

// TestManagerRefusesReplicasAboveTheLimit: a count above MaxReplicas in the
// shared state (written by a proxy with a higher limit) never reaches the
// runtime, and the version's Problem names the limit.
func TestManagerRefusesReplicasAboveTheLimit(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	fake := newFake()
	if err := store.PutVersion(ctx, processVersion("m", "1", 1_000_000_000)); err != nil {
		t.Fatal(err)
	}
	m := runtime.NewManager(store, runtime.Options{Runtimes: map[state.RuntimeKind]runtime.Runtime{state.RuntimeProcess: fake}, MaxReplicas: 32})
	if err := m.Reconcile(ctx); err == nil {
		t.Fatal("Reconcile returned nil for a count above the limit")
	}
	if p := m.Problem("m", "1"); !strings.Contains(p, "above limits.max_replicas (32)") {
		t.Errorf("Problem = %q, want it to name limits.max_replicas", p)
	}
	if n := fake.running[runtime.VersionKey{Model: "m", Version: "1"}]; n != 0 {
		t.Errorf("the runtime was asked for %d replicas", n)
	}
}
