package docker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// within bounds every wait on containers: generous, since the machine is
// shared and noisy; never a measure of speed.
const within = 2 * time.Minute

// harness is a proxy over a memory store whose docker versions a Manager
// runs through a docker Runtime, on the real Engine, with the costmodel
// image built for the test.
type harness struct {
	t     *testing.T
	cli   *client.Client
	owner string
	image string
	store *state.Store
	srv   *httptest.Server

	rt  *docker.Runtime
	mgr *runtime.Manager
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cli := testutil.RequireDocker(t)
	h := &harness{t: t, cli: cli, owner: testutil.UniqueName("sloproxy-test-"), store: state.NewStore(nil, state.Options{})}
	testutil.RemoveContainers(t, cli, docker.OwnerLabel, h.owner)
	h.image = testutil.BuildExampleImage(t, cli, "costmodel")

	p := proxy.New(proxy.Options{Store: h.store, Registry: prometheus.NewRegistry(), MaxBodyBytes: 1 << 16, MaxInputBatch: 8,
		Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	h.srv = httptest.NewServer(p.Handler())
	t.Cleanup(func() { h.srv.Close(); cancel(); <-done })
	h.startRuntime()
	return h
}

// startRuntime starts a Runtime and its Manager, closed when the test ends
// unless stopRuntime closes them first.
func (h *harness) startRuntime() {
	h.t.Helper()
	ctx := context.Background()
	rt, err := docker.New(ctx, docker.Options{Owner: h.owner, DrainTimeout: 500 * time.Millisecond, StopTimeout: time.Second,
		HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: time.Second, Logger: zaptest.NewLogger(h.t)})
	if err != nil {
		h.t.Fatal(err)
	}
	mgr := runtime.NewManager(h.store, runtime.Options{Runtimes: map[state.RuntimeKind]runtime.Runtime{state.RuntimeDocker: rt},
		Interval: time.Second, Logger: zaptest.NewLogger(h.t).Named("manager")})
	if err := mgr.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	h.rt, h.mgr = rt, mgr
	h.t.Cleanup(h.stopRuntime)
}

func (h *harness) stopRuntime() {
	if h.mgr != nil {
		_ = h.mgr.Close()
		_ = h.rt.Close()
		h.mgr, h.rt = nil, nil
	}
}

func (h *harness) version(v string, replicas int) state.ModelVersion {
	return state.ModelVersion{Model: "cm", Version: v, InputType: state.InputFloat32, Replicas: replicas,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker, Image: h.image, CPUs: 0.5, MemoryBytes: 64 << 20}}
}

// deploy puts mv in the state, waits until its replicas are registered and
// returns how long that took.
func (h *harness) deploy(mv state.ModelVersion) time.Duration {
	h.t.Helper()
	start := time.Now()
	must(h.t, h.store.PutVersion(context.Background(), mv))
	h.waitReplicas(mv.Version, mv.Replicas)
	return time.Since(start)
}

// waitReplicas waits until the state has n replicas of version v and the
// Engine runs exactly n containers of it.
func (h *harness) waitReplicas(v string, n int) {
	h.t.Helper()
	testutil.Eventually(h.t, within, fmt.Sprintf("%d registered replicas and containers of cm:%s", n, v), func() bool {
		return len(h.store.Snapshot().Replicas("cm", v)) == n && len(h.containers(v)) == n
	})
}

// containers returns the ids of the running containers of version v
// (every version when v is empty), sorted.
func (h *harness) containers(v string) []string {
	h.t.Helper()
	f := filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+h.owner))
	if v != "" {
		f.Add("label", docker.VersionLabel+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := h.cli.ContainerList(ctx, container.ListOptions{Filters: f})
	if err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

// addApp creates the app "app" using model cm.
func (h *harness) addApp(slo time.Duration) {
	h.t.Helper()
	ctx := context.Background()
	must(h.t, h.store.PutApp(ctx, state.App{Name: "app", InputType: state.InputFloat32, SLO: slo, DefaultOutput: "-1"}))
	must(h.t, h.store.Link(ctx, "app", "cm"))
}

// stream is a steady stream of queries to the app, from a few clients.
type stream struct {
	stop chan struct{}
	wg   sync.WaitGroup

	ok, defaults, failed atomic.Int64
	mu                   sync.Mutex
	models               map[string]int // answers by model:version
	errs                 []string       // the first failures
}

// query sends one query; it returns the answering model or records the
// failure.
func (h *harness) query(s *stream) {
	resp, err := h.srv.Client().Post(h.srv.URL+"/apps/app/predict", "application/json", strings.NewReader(`{"input": [1, 2, 3]}`))
	if err != nil {
		s.fail(err.Error())
		return
	}
	defer resp.Body.Close()
	var body struct {
		Default     bool   `json:"default"`
		Explanation string `json:"default_explanation"`
		Model       string `json:"model"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		s.fail(fmt.Sprintf("status %d, %v", resp.StatusCode, err))
		return
	}
	s.mu.Lock()
	s.models[body.Model]++
	s.mu.Unlock()
	if body.Default {
		s.defaults.Add(1)
		s.fail("default output: " + body.Explanation)
		return
	}
	s.ok.Add(1)
}

func (s *stream) fail(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !strings.HasPrefix(why, "default output") {
		s.failed.Add(1)
	}
	if len(s.errs) < 10 {
		s.errs = append(s.errs, why)
	}
}

// startStream sends queries from 4 clients, each every 10 ms, until the
// returned stream's end is called.
func (h *harness) startStream() *stream {
	s := &stream{stop: make(chan struct{}), models: map[string]int{}}
	for range 4 {
		s.wg.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-s.stop:
					return
				case <-tick.C:
					h.query(s)
				}
			}
		})
	}
	return s
}

// answered returns how many queries model (a model:version; "" for any)
// has answered so far.
func (s *stream) answered(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if model != "" {
		return s.models[model]
	}
	n := 0
	for m, c := range s.models {
		if m != "" {
			n += c
		}
	}
	return n
}

// await waits until model (as for answered) has answered n more queries:
// traffic that really flowed around an event, whatever the machine's load.
func (s *stream) await(t *testing.T, model string, n int) {
	t.Helper()
	from := s.answered(model)
	testutil.Eventually(t, within, fmt.Sprintf("%d more answers from %q", n, model), func() bool { return s.answered(model) >= from+n })
}

// end stops the stream and logs what it got.
func (s *stream) end(t *testing.T) {
	t.Helper()
	close(s.stop)
	s.wg.Wait()
	t.Logf("queries: %d answered by a model, %d default outputs, %d failed; by model: %v; first problems: %q",
		s.ok.Load(), s.defaults.Load(), s.failed.Load(), s.models, s.errs)
	if s.ok.Load() == 0 {
		t.Fatal("no query was answered by a model")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeployServeAndReplaceKilled deploys 2 replicas of costmodel, serves
// queries, and docker-kills one under a steady stream of queries: every
// query is answered (by a model or with the flagged default) and a new
// container replaces the killed one.
func TestDeployServeAndReplaceKilled(t *testing.T) {
	h := newHarness(t)
	took := h.deploy(h.version("1", 2))
	t.Logf("deploy to ready (2 replicas, HELLO and warm-up answered, registered): %v", took)
	h.addApp(2 * time.Second)
	s := h.startStream()
	s.await(t, "", 20) // traffic before the kill

	before := h.containers("1")
	victim := before[0]
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, h.cli.ContainerKill(ctx, victim, "KILL"))
	testutil.Eventually(t, within, "a ready replacement of the killed container", func() bool {
		ids := h.containers("1")
		return len(ids) == 2 && !slices.Contains(ids, victim) && len(h.store.Snapshot().Replicas("cm", "1")) == 2 &&
			readyCount(h.rt.Status("cm", "1")) == 2
	})
	t.Logf("kill to replaced (new container ready and registered): %v", time.Since(killed))
	s.await(t, "", 20) // traffic after the replacement
	s.end(t)
	if s.failed.Load() > 0 {
		t.Errorf("%d queries failed; every query must be answered, by a model or with the default output", s.failed.Load())
	}
	restarted := 0
	for _, st := range h.rt.Status("cm", "1") {
		restarted += st.Restarts
		if st.Restarts == 0 {
			continue
		}
		// Its exit told, whether the Engine's die event came first or the
		// missed heartbeats found the container stopped: not "missed 3
		// heartbeats", which is for a container still running.
		var cerr *docker.ContainerError
		if !errors.As(st.Err, &cerr) || !strings.Contains(cerr.Reason, "exited with status 137") {
			t.Errorf("replica %d restarted after %v, want its container's exit with status 137 (SIGKILL)", st.Index, st.Err)
		}
	}
	if restarted != 1 {
		t.Errorf("restarts = %d, want 1 (the killed replica's)", restarted)
	}
}

func readyCount(st []docker.ReplicaStatus) int {
	n := 0
	for _, s := range st {
		if s.Addr != "" {
			n++
		}
	}
	return n
}

// TestScaleAndRemove scales 2→4→1, then deletes the version: the Engine
// runs as many containers as the state asks, and none once it is deleted.
func TestScaleAndRemove(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(t, h.store.PutVersion(ctx, h.version("1", 1)))
	h.deploy(h.version("2", 2))
	for _, n := range []int{4, 1} {
		must(t, h.store.PutVersion(ctx, h.version("2", n)))
		h.waitReplicas("2", n)
	}
	must(t, h.store.DeleteVersion(ctx, "cm", "2"))
	testutil.Eventually(t, within, "no container of the deleted version", func() bool { return len(h.containers("2")) == 0 })
	if n := len(h.containers("1")); n != 1 {
		t.Errorf("version 1 runs %d containers, want 1", n)
	}
}

// TestRolloutAndRollback rolls out v2 under load, rolls back to v1, and
// scales v1 down: the new version is ready before it becomes current and a
// replica that goes is drained before it stops, so no query fails or
// misses its deadline.
func TestRolloutAndRollback(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.deploy(h.version("1", 2))
	h.addApp(time.Second)
	s := h.startStream()
	s.await(t, "cm:1", 20)

	took := h.deploy(h.version("2", 2))
	t.Logf("v2 deploy to ready under load: %v", took)
	must(t, h.store.SetCurrent(ctx, "cm", "2"))
	s.await(t, "cm:2", 50)
	must(t, h.store.SetCurrent(ctx, "cm", "1")) // the rollback
	s.await(t, "cm:1", 50)
	// Scaling the serving version down under load: the replica that goes
	// is withdrawn, drained, and only then stopped.
	must(t, h.store.PutVersion(ctx, h.version("1", 1)))
	h.waitReplicas("1", 1)
	s.await(t, "cm:1", 20)
	s.end(t)
	if s.failed.Load() > 0 || s.defaults.Load() > 0 {
		t.Errorf("%d queries failed and %d got the default output; want none", s.failed.Load(), s.defaults.Load())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.models["cm:2"] == 0 {
		t.Errorf("no query was answered by v2: %v", s.models)
	}
}

// TestRestartAdopts closes the runtime and its manager, as a proxy that
// restarts does, and starts new ones: they adopt the running containers
// instead of starting duplicates.
func TestRestartAdopts(t *testing.T) {
	h := newHarness(t)
	h.deploy(h.version("1", 2))
	before := h.containers("")
	addrs := h.store.Snapshot().Replicas("cm", "1")
	h.stopRuntime()
	if after := h.containers(""); !slices.Equal(after, before) {
		t.Fatalf("closing the runtime changed the containers: %v, then %v", before, after)
	}
	h.startRuntime()
	must(t, h.mgr.Reconcile(context.Background()))
	// Adopted replicas keep their addresses registered: other proxies
	// sharing the state go on sending to them.
	if got := h.store.Snapshot().Replicas("cm", "1"); !slices.Equal(got, addrs) {
		t.Errorf("after a restart the registered replicas are %v, want the same %v", got, addrs)
	}
	testutil.Eventually(t, within, "the adopted replicas ready", func() bool { return readyCount(h.rt.Status("cm", "1")) == 2 })
	must(t, h.mgr.Reconcile(context.Background()))
	if after := h.containers(""); !slices.Equal(after, before) {
		t.Errorf("after a restart the containers are %v, want the same %v", after, before)
	}
}

// TestMissingImage: a version whose image the Engine lacks gets an error
// that says so, and no container.
func TestMissingImage(t *testing.T) {
	h := newHarness(t)
	mv := h.version("1", 1)
	mv.Runtime.Image = "sloproxy-test/does-not-exist:1"
	_, err := h.rt.Ensure(context.Background(), mv)
	if !errors.Is(err, docker.ErrImageNotFound) || !strings.Contains(err.Error(), mv.Runtime.Image) {
		t.Fatalf("Ensure = %v, want ErrImageNotFound naming %s", err, mv.Runtime.Image)
	}
	if ids := h.containers(""); len(ids) != 0 {
		t.Errorf("containers %v started for a missing image", ids)
	}
}

// TestExitsAtOnce: a container that exits at start gives an error with its
// exit status and last lines of output, and is retried with backoff.
func TestExitsAtOnce(t *testing.T) {
	h := newHarness(t)
	h.stopRuntime() // Ensure is called directly here
	rt, err := docker.New(context.Background(), docker.Options{Owner: h.owner, MinBackoff: time.Second, Logger: zaptest.NewLogger(t)})
	must(t, err)
	defer rt.Close()
	mv := h.version("1", 1)
	mv.Runtime.Env = map[string]string{"COSTMODEL_A": "not-a-duration"}
	var cerr *docker.ContainerError
	testutil.Eventually(t, within, "Ensure to report the container's exit", func() bool {
		_, err := rt.Ensure(context.Background(), mv)
		return errors.As(err, &cerr)
	})
	t.Logf("the error: %v", cerr)
	if !strings.Contains(cerr.Reason, "exited with status 1") {
		t.Errorf("reason %q, want the exit status", cerr.Reason)
	}
	if !strings.Contains(strings.Join(cerr.Logs, "\n"), "COSTMODEL_A") {
		t.Errorf("logs %q, want the line that names the bad variable", cerr.Logs)
	}
	if !bytes.Contains([]byte(cerr.Error()), []byte(cerr.Container)) {
		t.Errorf("error %q does not name the container", cerr.Error())
	}
}

// TestNoopImage runs the noop example's FROM scratch image, built through
// the Engine API, as a replica and calls it over RPC: the image answers
// HELLO with the name and version the runtime gave it, and echoes inputs.
func TestNoopImage(t *testing.T) {
	h := newHarness(t)
	h.stopRuntime() // Ensure is called directly here
	img := testutil.BuildExampleImage(t, h.cli, "noop")
	rt, err := docker.New(context.Background(), docker.Options{Owner: h.owner, Logger: zaptest.NewLogger(t)})
	must(t, err)
	defer rt.Close()
	mv := state.ModelVersion{Model: "echo", Version: "7", InputType: state.InputBytes, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker, Image: img}}
	var addrs []string
	testutil.Eventually(t, within, "the noop replica ready", func() bool {
		addrs, err = rt.Ensure(context.Background(), mv)
		must(t, err)
		return len(addrs) == 1
	})
	c := rpc.NewClient(addrs[0], rpc.ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.Start(ctx)
	defer c.Close()
	hello, err := c.WaitReady(ctx)
	must(t, err)
	if hello.Model != "echo" || hello.ModelVersion != "7" {
		t.Errorf("HELLO names %s:%s, want echo:7", hello.Model, hello.ModelVersion)
	}
	out, err := c.Predict(ctx, rpc.Bytes, [][]byte{[]byte("hi")})
	must(t, err)
	if len(out) != 1 || string(out[0].Data) != "hi" {
		t.Errorf("noop answered %+v, want hi", out)
	}
}

// TestPausedReplaced: a container that stops answering without exiting
// (docker pause) misses its heartbeats and is replaced.
func TestPausedReplaced(t *testing.T) {
	h := newHarness(t)
	h.deploy(h.version("1", 1))
	victim := h.containers("1")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, h.cli.ContainerPause(ctx, victim))
	testutil.Eventually(t, within, "a ready replacement of the paused container", func() bool {
		ids := h.containers("1")
		return len(ids) == 1 && ids[0] != victim && readyCount(h.rt.Status("cm", "1")) == 1
	})
	st := h.rt.Status("cm", "1")[0]
	if st.Err == nil || !strings.Contains(st.Err.Error(), "missed 3 heartbeats") {
		t.Errorf("the replica's failure is %v, want missed heartbeats", st.Err)
	}
}
