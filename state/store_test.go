package state_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// TestStore runs one behaviour suite against every Backend kind.
func TestStore(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, newBackend func() state.Backend)
	}{
		{"apps", testApps},
		{"versions and rollback", testVersions},
		{"links", testLinks},
		{"replicas", testReplicas},
		{"errors", testErrors},
		{"revision and Changed", testRevision},
		{"propagation", testPropagation},
		{"late start loads everything", testLateStart},
		{"concurrent mutations", testConcurrent},
		{"selection and features specs are set by UpdateApp and kept by PutApp", testAppSelection},
	}
	for _, kind := range backendKinds(t) {
		t.Run(kind.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, kind.open(t)) })
			}
		})
	}
}

func testApps(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	a := state.App{Name: "digits", InputType: state.InputFloat32, SLO: 1500 * time.Microsecond, DefaultOutput: "-1", Policy: "exp3", Priority: 2}
	must(t, s.PutApp(ctx, a))
	must(t, s.PutApp(ctx, app("beta", state.InputBytes)))
	if got, ok := s.Snapshot().App("digits"); !ok || !reflect.DeepEqual(got, a) {
		t.Fatalf("App(digits) = %+v, %v; want %+v", got, ok, a)
	}
	if got := names(s.Snapshot().Apps(), func(a state.App) string { return a.Name }); !slices.Equal(got, []string{"beta", "digits"}) {
		t.Errorf("Apps() = %v; want [beta digits]", got)
	}
	a.SLO = time.Second
	must(t, s.PutApp(ctx, a))
	if got, _ := s.Snapshot().App("digits"); got.SLO != time.Second {
		t.Errorf("after replacing, SLO = %v; want 1s", got.SLO)
	}
	must(t, s.DeleteApp(ctx, "digits"))
	if _, ok := s.Snapshot().App("digits"); ok {
		t.Errorf("App(digits) found after DeleteApp")
	}
}

func testVersions(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	v1 := version("mnist", "1", state.InputFloat32)
	v1.Labels = map[string]string{"framework": "onnx"}
	v1.BatchSize = 16
	must(t, s.PutVersion(ctx, v1))
	must(t, s.PutVersion(ctx, version("mnist", "2", state.InputFloat32)))

	current := func() string {
		v, _ := s.Snapshot().Current("mnist")
		return v.Version
	}
	if got := current(); got != "1" {
		t.Fatalf("after deploying 1 then 2, current = %q; want the first, 1", got)
	}
	must(t, s.SetCurrent(ctx, "mnist", "2"))
	if got := current(); got != "2" {
		t.Fatalf("after SetCurrent 2, current = %q", got)
	}
	must(t, s.SetCurrent(ctx, "mnist", "1")) // rollback
	if got := current(); got != "1" {
		t.Fatalf("after rollback to 1, current = %q", got)
	}
	if got, ok := s.Snapshot().Version("mnist", "1"); !ok || !reflect.DeepEqual(got, v1) {
		t.Errorf("Version(mnist, 1) = %+v, %v; want %+v", got, ok, v1)
	}
	m, _ := s.Snapshot().Model("mnist")
	if got := names(m.Versions, func(v state.ModelVersion) string { return v.Version }); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("versions = %v; want [1 2], oldest first", got)
	}

	// Replacing a version's spec (scaling) keeps it in place and current.
	v1.Replicas = 3
	must(t, s.PutVersion(ctx, v1))
	if got, _ := s.Snapshot().Current("mnist"); got.Replicas != 3 {
		t.Errorf("after scaling, replicas = %d; want 3", got.Replicas)
	}

	// Deleting the current version of an unlinked model leaves no current
	// version; the next deployment becomes current.
	must(t, s.DeleteVersion(ctx, "mnist", "1"))
	if v, ok := s.Snapshot().Current("mnist"); ok {
		t.Errorf("after deleting the current version, Current = %+v", v)
	}
	must(t, s.PutVersion(ctx, version("mnist", "3", state.InputFloat32)))
	if got := current(); got != "3" {
		t.Errorf("deploying to a model without a current version: current = %q; want 3", got)
	}
	must(t, s.DeleteVersion(ctx, "mnist", "2"))
	must(t, s.DeleteVersion(ctx, "mnist", "3"))
	if _, ok := s.Snapshot().Model("mnist"); ok {
		t.Errorf("model still exists after deleting its last version")
	}
}

func testLinks(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	must(t, s.PutApp(ctx, app("a", state.InputString)))
	must(t, s.PutApp(ctx, app("b", state.InputString)))
	must(t, s.PutVersion(ctx, version("m2", "1", state.InputString)))
	must(t, s.PutVersion(ctx, version("m1", "1", state.InputString)))
	must(t, s.Link(ctx, "a", "m2"))
	must(t, s.Link(ctx, "a", "m1"))
	must(t, s.Link(ctx, "b", "m1"))
	rev := s.Snapshot().Revision()
	must(t, s.Link(ctx, "a", "m1")) // again: no error, no change
	if got := s.Snapshot().Revision(); got != rev {
		t.Errorf("linking twice changed the revision from %d to %d", rev, got)
	}
	snap := s.Snapshot()
	if got := snap.ModelsOf("a"); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Errorf("ModelsOf(a) = %v; want [m1 m2]", got)
	}
	if got := snap.AppsOf("m1"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("AppsOf(m1) = %v; want [a b]", got)
	}
	must(t, s.Unlink(ctx, "a", "m2"))
	must(t, s.Unlink(ctx, "a", "m2")) // again: no error
	if got := s.Snapshot().ModelsOf("a"); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("after Unlink, ModelsOf(a) = %v; want [m1]", got)
	}
	must(t, s.DeleteApp(ctx, "b"))
	if got := s.Snapshot().AppsOf("m1"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after DeleteApp(b), AppsOf(m1) = %v; want [a]", got)
	}
	// A new app of the same name starts without links.
	must(t, s.PutApp(ctx, app("b", state.InputString)))
	if got := s.Snapshot().ModelsOf("b"); got != nil {
		t.Errorf("recreated app has links %v", got)
	}
}

func testReplicas(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	must(t, s.PutVersion(ctx, version("m", "1", state.InputBytes)))
	must(t, s.PutVersion(ctx, version("m", "2", state.InputBytes)))
	addrs := []string{"127.0.0.1:7002", "127.0.0.1:7001", "127.0.0.1:7002"}
	must(t, s.SetReplicas(ctx, "m", "1", addrs))
	addrs[0] = "changed:1" // the store keeps its own copy
	want := []string{"127.0.0.1:7001", "127.0.0.1:7002"}
	if got := s.Snapshot().Replicas("m", "1"); !slices.Equal(got, want) {
		t.Fatalf("Replicas = %v; want %v, sorted and without duplicates", got, want)
	}
	rev := s.Snapshot().Revision()
	must(t, s.SetReplicas(ctx, "m", "1", []string{"127.0.0.1:7001", "127.0.0.1:7002"}))
	if got := s.Snapshot().Revision(); got != rev {
		t.Errorf("setting the same replicas changed the revision from %d to %d", rev, got)
	}
	must(t, s.SetReplicas(ctx, "m", "2", []string{"[::1]:7003"}))
	must(t, s.SetReplicas(ctx, "m", "2", nil))
	if got := s.Snapshot().Replicas("m", "2"); got != nil {
		t.Errorf("after clearing, Replicas = %v", got)
	}
	must(t, s.SetCurrent(ctx, "m", "2"))
	must(t, s.DeleteVersion(ctx, "m", "1"))
	must(t, s.PutVersion(ctx, version("m", "1", state.InputBytes)))
	if got := s.Snapshot().Replicas("m", "1"); got != nil {
		t.Errorf("a version deleted and deployed again kept its old replicas %v", got)
	}
}

func testErrors(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	must(t, s.PutApp(ctx, app("a", state.InputFloat32)))
	must(t, s.PutApp(ctx, app("b", state.InputBytes)))
	must(t, s.PutVersion(ctx, version("m", "1", state.InputFloat32)))
	must(t, s.PutVersion(ctx, version("m", "2", state.InputFloat32)))
	must(t, s.PutVersion(ctx, version("n", "1", state.InputFloat32)))
	must(t, s.DeleteVersion(ctx, "n", "1"))
	must(t, s.PutVersion(ctx, version("n", "1", state.InputFloat32)))
	must(t, s.PutVersion(ctx, version("n", "2", state.InputFloat32)))
	must(t, s.DeleteVersion(ctx, "n", "1")) // n has versions but no current one
	must(t, s.Link(ctx, "a", "m"))

	withRuntime := func(r state.RuntimeSpec) state.ModelVersion {
		v := version("m", "9", state.InputFloat32)
		v.Runtime = r
		return v
	}
	cases := []struct {
		name    string
		op      func() error
		want    error
		message string // a part of the error's message
	}{
		{"app name", func() error { return s.PutApp(ctx, app("Bad", state.InputBytes)) }, state.ErrInvalid, "name"},
		{"app input type", func() error { return s.PutApp(ctx, app("c", "int64")) }, state.ErrInvalid, `input_type "int64"`},
		{"app slo", func() error { a := app("c", state.InputBytes); a.SLO = 0; return s.PutApp(ctx, a) }, state.ErrInvalid, "slo_ms"},
		{"app input type vs linked model", func() error { return s.PutApp(ctx, app("a", state.InputBytes)) }, state.ErrConflict, `linked model "m"`},
		{"delete missing app", func() error { return s.DeleteApp(ctx, "zz") }, state.ErrNotFound, `app "zz"`},
		{"version name", func() error { return s.PutVersion(ctx, version("m", "-1", state.InputFloat32)) }, state.ErrInvalid, "version"},
		{"version replicas", func() error { v := version("m", "9", state.InputFloat32); v.Replicas = 0; return s.PutVersion(ctx, v) }, state.ErrInvalid, "replicas 0"},
		{"version batch size", func() error {
			v := version("m", "9", state.InputFloat32)
			v.BatchSize = -1
			return s.PutVersion(ctx, v)
		}, state.ErrInvalid, "batch_size"},
		{"runtime kind", func() error { return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: "vm"})) }, state.ErrInvalid, "runtime.kind"},
		{"process without command", func() error { return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeProcess})) }, state.ErrInvalid, "runtime.command"},
		{"process with image", func() error {
			return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"x"}, Image: "x"}))
		}, state.ErrInvalid, "runtime.image: not used by the process runtime"},
		{"external address", func() error {
			return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{"localhost"}}))
		}, state.ErrInvalid, "runtime.addresses"},
		{"docker without image", func() error { return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeDocker})) }, state.ErrInvalid, "runtime.image"},
		{"docker gpus and device ids", func() error {
			return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "x", GPUs: 1, DeviceIDs: []string{"0"}}))
		}, state.ErrInvalid, "runtime.gpus"},
		{"swarm without image", func() error { return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeSwarm})) }, state.ErrInvalid, "swarm runtime"},
		{"swarm with all gpus", func() error {
			return s.PutVersion(ctx, withRuntime(state.RuntimeSpec{Kind: state.RuntimeSwarm, Image: "x", GPUs: -1}))
		}, state.ErrInvalid, "generic GPU resources"},
		{"version input type vs other versions", func() error { return s.PutVersion(ctx, version("m", "3", state.InputBytes)) }, state.ErrConflict, `input_type "bytes"`},
		{"delete current version of linked model", func() error { return s.DeleteVersion(ctx, "m", "1") }, state.ErrConflict, "current version"},
		{"delete missing version", func() error { return s.DeleteVersion(ctx, "m", "9") }, state.ErrNotFound, `version "9"`},
		{"delete version of missing model", func() error { return s.DeleteVersion(ctx, "zz", "1") }, state.ErrNotFound, `model "zz"`},
		{"set current to missing version", func() error { return s.SetCurrent(ctx, "m", "9") }, state.ErrNotFound, `version "9"`},
		{"set current of missing model", func() error { return s.SetCurrent(ctx, "zz", "1") }, state.ErrNotFound, `model "zz"`},
		{"link across input types", func() error { return s.Link(ctx, "b", "m") }, state.ErrConflict, "input_type"},
		{"link missing app", func() error { return s.Link(ctx, "zz", "m") }, state.ErrNotFound, `app "zz"`},
		{"link missing model", func() error { return s.Link(ctx, "a", "zz") }, state.ErrNotFound, `model "zz"`},
		{"link model without current version", func() error { return s.Link(ctx, "a", "n") }, state.ErrConflict, "no current version"},
		{"unlink missing app", func() error { return s.Unlink(ctx, "zz", "m") }, state.ErrNotFound, `app "zz"`},
		{"replicas of missing version", func() error { return s.SetReplicas(ctx, "m", "9", nil) }, state.ErrNotFound, `version "9"`},
		{"replica address", func() error { return s.SetReplicas(ctx, "m", "1", []string{"nope"}) }, state.ErrInvalid, "replicas"},
		{"replica port", func() error { return s.SetReplicas(ctx, "m", "1", []string{"127.0.0.1:0"}) }, state.ErrInvalid, "port"},
	}
	rev := s.Snapshot().Revision()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.op()
			if !errors.Is(err, c.want) {
				t.Fatalf("error = %v; want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.message) {
				t.Errorf("error %q does not mention %q", err, c.message)
			}
		})
	}
	if got := s.Snapshot().Revision(); got != rev {
		t.Errorf("failed mutations changed the revision from %d to %d", rev, got)
	}
}

func testRevision(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	before := s.Snapshot()
	must(t, s.PutApp(ctx, app("a", state.InputInt32)))
	after := s.Snapshot()
	if after.Revision() != before.Revision()+1 {
		t.Errorf("revision went from %d to %d; want +1", before.Revision(), after.Revision())
	}
	select {
	case <-before.Changed():
	default:
		t.Errorf("the replaced snapshot's Changed channel is open")
	}
	must(t, s.PutApp(ctx, app("a", state.InputInt32))) // no change
	select {
	case <-after.Changed():
		t.Errorf("Changed fired for a mutation that changed nothing")
	default:
	}
	if _, ok := before.App("a"); ok {
		t.Errorf("an old snapshot saw a later change")
	}
}

func testPropagation(t *testing.T, newBackend func() state.Backend) {
	a := startStore(t, newBackend(), state.Options{})
	b := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	var latencies []time.Duration
	for i := range 20 {
		name := fmt.Sprintf("app%d", i)
		start := time.Now()
		must(t, a.PutApp(ctx, app(name, state.InputFloat64)))
		waitFor(t, b, "change through one store seen by the other", func(s *state.Snapshot) bool {
			_, ok := s.App(name)
			return ok
		})
		latencies = append(latencies, time.Since(start))
	}
	slices.Sort(latencies)
	t.Logf("mutation through store A until visible in store B: min %v, median %v, max %v (%d changes)",
		latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1], len(latencies))
	if a.Snapshot().Revision() != b.Snapshot().Revision() {
		t.Errorf("revisions differ: %d and %d", a.Snapshot().Revision(), b.Snapshot().Revision())
	}
}

func testLateStart(t *testing.T, newBackend func() state.Backend) {
	a := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	must(t, a.PutApp(ctx, app("a", state.InputFloat32)))
	must(t, a.PutVersion(ctx, version("m", "1", state.InputFloat32)))
	must(t, a.PutVersion(ctx, version("m", "2", state.InputFloat32)))
	must(t, a.SetCurrent(ctx, "m", "2"))
	must(t, a.Link(ctx, "a", "m"))
	must(t, a.SetReplicas(ctx, "m", "2", []string{"127.0.0.1:7001"}))

	late := startStore(t, newBackend(), state.Options{})
	want, got := a.Snapshot(), late.Snapshot()
	if got.Revision() != want.Revision() {
		t.Errorf("late store at revision %d; want %d", got.Revision(), want.Revision())
	}
	if !reflect.DeepEqual(got.Apps(), want.Apps()) {
		t.Errorf("late store apps = %+v; want %+v", got.Apps(), want.Apps())
	}
	if !reflect.DeepEqual(got.Models(), want.Models()) {
		t.Errorf("late store models = %+v; want %+v", got.Models(), want.Models())
	}
	if v, _ := got.Current("m"); v.Version != "2" {
		t.Errorf("late store current version = %q; want 2", v.Version)
	}
	if m := got.ModelsOf("a"); !slices.Equal(m, []string{"m"}) {
		t.Errorf("late store ModelsOf(a) = %v", m)
	}
	if r := got.Replicas("m", "2"); !slices.Equal(r, []string{"127.0.0.1:7001"}) {
		t.Errorf("late store Replicas = %v", r)
	}
}

func testConcurrent(t *testing.T, newBackend func() state.Backend) {
	stores := []*state.Store{
		startStore(t, newBackend(), state.Options{}),
		startStore(t, newBackend(), state.Options{}),
	}
	ctx := t.Context()
	const perStore, workers = 50, 5
	must(t, stores[0].PutApp(ctx, app("a", state.InputBytes)))
	var want []string
	for i := range len(stores) * perStore {
		m := fmt.Sprintf("m%03d", i)
		want = append(want, m)
		must(t, stores[0].PutVersion(ctx, version(m, "1", state.InputBytes)))
	}
	waitFor(t, stores[1], "models deployed", func(s *state.Snapshot) bool { return len(s.Models()) == len(want) })

	// Each store links its own 50 models from several goroutines at once.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(want))
	for si, s := range stores {
		for w := range workers {
			wg.Go(func() {
				for i := w; i < perStore; i += workers {
					if err := s.Link(ctx, "a", want[si*perStore+i]); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Link: %v", err)
	}
	t.Logf("%d concurrent links through %d stores took %v", len(want), len(stores), time.Since(start))
	for i, s := range stores {
		waitFor(t, s, fmt.Sprintf("store %d sees every link", i), func(s *state.Snapshot) bool {
			return slices.Equal(s.ModelsOf("a"), want)
		})
	}
}

func names[T any](xs []T, name func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, name(x))
	}
	return out
}

// TestAddVersion: a version is registered once; the same spec again
// changes nothing, another spec is a conflict decided on the committed
// state, even through a second Store whose snapshot is stale.
func TestAddVersion(t *testing.T) {
	ctx := context.Background()
	backend := state.NewMemory()
	a, b := state.NewStore(backend, state.Options{PollInterval: -1}), state.NewStore(backend, state.Options{PollInterval: -1})
	for _, s := range []*state.Store{a, b} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	v := state.ModelVersion{Model: "m", Version: "1", InputType: state.InputBytes, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/bin/m"}}}
	if added, err := a.AddVersion(ctx, v); !added || err != nil {
		t.Fatalf("first: added %v, %v", added, err)
	}
	if mv, ok := a.Snapshot().Current("m"); !ok || mv.Version != "1" {
		t.Fatalf("the first version is not current: %+v %v", mv, ok)
	}
	if added, err := b.AddVersion(ctx, v); added || err != nil {
		t.Fatalf("the same spec again: added %v, %v; want no change, no error", added, err)
	}
	other := v
	other.Runtime.Command = []string{"/bin/other"}
	if added, err := b.AddVersion(ctx, other); added || !errors.Is(err, state.ErrConflict) {
		t.Fatalf("another spec: added %v, %v; want a conflict", added, err)
	}
	if mv, _ := a.Snapshot().Version("m", "1"); mv.Runtime.Command[0] != "/bin/m" {
		t.Fatalf("the spec was overwritten: %+v", mv)
	}
}

func testAppSelection(t *testing.T, newBackend func() state.Backend) {
	s := startStore(t, newBackend(), state.Options{})
	ctx := t.Context()
	must(t, s.PutApp(ctx, app("digits", state.InputFloat32)))
	spec := json.RawMessage(`{"policy":"exp3","gamma":0.2}`)
	feats := json.RawMessage(`{"key":"user:{id}","fields":[{"name":"a","default":0}]}`)
	refused := errors.New("refused")
	if err := s.UpdateApp(ctx, "digits", func(*state.App, []string) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("UpdateApp whose change refuses: %v; want its error", err)
	}
	if err := s.UpdateApp(ctx, "nope", func(*state.App, []string) error { return nil }); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("UpdateApp of an unknown app: %v", err)
	}
	must(t, s.UpdateApp(ctx, "digits", func(a *state.App, models []string) error {
		a.Selection, a.Features = spec, feats
		return nil
	}))
	// A put of the app's other fields keeps the specs.
	replaced := app("digits", state.InputFloat32)
	replaced.SLO, replaced.Policy = 3*time.Second, "exp4"
	must(t, s.PutApp(ctx, replaced))
	got, _ := s.Snapshot().App("digits")
	if got.SLO != 3*time.Second || got.Policy != "exp4" || string(got.Selection) != string(spec) || string(got.Features) != string(feats) {
		t.Fatalf("after PutApp: %+v; want the new SLO and policy, with the specs kept", got)
	}
	must(t, s.UpdateApp(ctx, "digits", func(a *state.App, _ []string) error {
		a.Selection, a.Features = nil, nil
		return nil
	}))
	if got, _ := s.Snapshot().App("digits"); got.Selection != nil || got.Features != nil {
		t.Fatalf("after clearing: %+v", got)
	}
}

// TestScaleAndAutoscale: ScaleVersion changes the count alone,
// SetAutoscale brings the count within its bounds and refuses bad ones
// naming the field, and a rollout to an autoscaled version starts it at
// the outgoing version's count.
func TestScaleAndAutoscale(t *testing.T) {
	ctx := t.Context()
	s := state.NewStore(state.NewMemory(), state.Options{})
	v1 := state.ModelVersion{Model: "m", Version: "1", InputType: state.InputBytes, Replicas: 1, Labels: map[string]string{"k": "v"},
		Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"/bin/m"}}}
	v2 := v1
	v2.Version = "2"
	for _, v := range []state.ModelVersion{v1, v2} {
		if err := s.PutVersion(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ScaleVersion(ctx, "m", "1", 5); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Snapshot().Version("m", "1")
	want := v1
	want.Replicas = 5
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after ScaleVersion: %+v, want %+v", got, want)
	}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{s.ScaleVersion(ctx, "m", "1", 0), state.ErrInvalid},
		{s.ScaleVersion(ctx, "m", "9", 2), state.ErrNotFound},
		{s.SetAutoscale(ctx, "m", "2", &state.Autoscale{Min: 3, Max: 2}), state.ErrInvalid},
		{s.SetAutoscale(ctx, "m", "2", &state.Autoscale{Min: 1, Max: 2, Target: 1.5}), state.ErrInvalid},
		{s.SetAutoscale(ctx, "m", "2", &state.Autoscale{Min: 1, Max: 2, ScaleDownDelay: -time.Second}), state.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("got %v, want %v", tc.err, tc.want)
		}
	}
	if err := s.SetAutoscale(ctx, "m", "2", &state.Autoscale{Min: 2, Max: 4}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Snapshot().Version("m", "2"); got.Replicas != 2 || got.Autoscale == nil {
		t.Fatalf("after SetAutoscale: %+v, want 2 replicas (its min) and the bounds", got)
	}
	if err := s.SetCurrent(ctx, "m", "2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Snapshot().Version("m", "2"); got.Replicas != 4 {
		t.Fatalf("after the rollout: %d replicas, want 4 (the outgoing 5, within max 4)", got.Replicas)
	}
	if err := s.SetAutoscale(ctx, "m", "2", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Snapshot().Version("m", "2"); got.Replicas != 4 || got.Autoscale != nil {
		t.Fatalf("after turning it off: %+v, want 4 replicas and no bounds", got)
	}
	raw, err := json.Marshal(state.Autoscale{Min: 1, Max: 4, Target: 0.7, ScaleDownDelay: 1500 * time.Millisecond})
	if err != nil || string(raw) != `{"min":1,"max":4,"target":0.7,"scale_down_delay_s":1.5}` {
		t.Fatalf("JSON %s, %v", raw, err)
	}
}

// TestCheckApp: Options.CheckApp sees every app PutApp and UpdateApp would
// store, with the specs the put keeps, and its error refuses the change.
func TestCheckApp(t *testing.T) {
	refused := errors.New("refused")
	s := state.NewStore(nil, state.Options{CheckApp: func(a state.App) error {
		if a.InputType == state.InputInt32 && a.Features != nil {
			return fmt.Errorf("%w: %w", state.ErrConflict, refused)
		}
		return nil
	}})
	ctx := t.Context()
	must(t, s.PutApp(ctx, app("a", state.InputFloat32)))
	must(t, s.UpdateApp(ctx, "a", func(a *state.App, _ []string) error {
		a.Features = json.RawMessage(`{}`)
		return nil
	}))
	if err := s.PutApp(ctx, app("a", state.InputInt32)); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("PutApp to int32 with the kept spec: %v; want the check's conflict", err)
	}
	if err := s.UpdateApp(ctx, "a", func(a *state.App, _ []string) error {
		a.InputType = state.InputInt32
		return nil
	}); !errors.Is(err, refused) {
		t.Fatalf("UpdateApp to int32: %v; want the check's error", err)
	}
	if got, _ := s.Snapshot().App("a"); got.InputType != state.InputFloat32 {
		t.Fatalf("refused changes changed the app: %+v", got)
	}
	must(t, s.PutApp(ctx, app("b", state.InputInt32)))
}
