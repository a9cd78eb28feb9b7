package docker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// within bounds every wait on containers: generous, since the machine is
// shared and noisy; never a measure of speed.
const within = 2 * time.Minute

// harness is a memory store whose docker versions a Manager runs through a
// docker Runtime, on the real Engine, with the costmodel image built for
// the test. Tests reach the replicas directly over RPC at the addresses the
// state registers, as a proxy does.
type harness struct {
	t     *testing.T
	cli   *client.Client
	owner string
	image string
	store *state.Store

	rt  *docker.Runtime
	mgr *runtime.Manager
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cli := testutil.RequireDocker(t)
	h := &harness{t: t, cli: cli, owner: testutil.UniqueName("sloproxy-test-"), store: state.NewStore(nil, state.Options{})}
	testutil.RemoveContainers(t, cli, docker.OwnerLabel, h.owner)
	h.image = testutil.BuildExampleImage(t, cli, "costmodel")
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

// serves calls every registered replica of version v directly over RPC
// and fails the test unless each answers a prediction and names itself
// cm:v in its HELLO: a registered address is a replica ready to serve.
func (h *harness) serves(v string) {
	h.t.Helper()
	addrs := h.store.Snapshot().Replicas("cm", v)
	if len(addrs) == 0 {
		h.t.Fatalf("no replica of cm:%s registered", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, addr := range addrs {
		c := rpc.NewClient(addr, rpc.ClientOptions{})
		c.Start(ctx)
		hello, err := c.WaitReady(ctx)
		if err == nil && (hello.Model != "cm" || hello.ModelVersion != v) {
			err = fmt.Errorf("HELLO names %s:%s", hello.Model, hello.ModelVersion)
		}
		if err == nil {
			_, err = c.Predict(ctx, rpc.Float32, [][]byte{input})
		}
		c.Close()
		if err != nil {
			h.t.Fatalf("registered replica %s of cm:%s: %v", addr, v, err)
		}
	}
}

// input is one query's input: three float32 zeros.
var input = make([]byte, 12)

// stream is a steady stream of queries sent over RPC straight to the
// replicas the state registers for cm's current version, round robin, from
// a few clients: the state's view of which replicas serve, as every proxy
// sharing it acts on.
type stream struct {
	h    *harness
	load *testutil.Clients
	ctx  context.Context // ends the clients' reconnecting once the stream ends
	done context.CancelFunc

	mu      sync.Mutex
	clients map[string]*rpc.Client // by address
	next    int
	models  map[string]int // answers by model:version
	failed  int
	errs    []string // the first failures
}

// startStream sends queries from 4 clients, each every 10 ms, until the
// returned stream's end is called.
func (h *harness) startStream() *stream {
	s := &stream{h: h, clients: map[string]*rpc.Client{}, models: map[string]int{}}
	s.ctx, s.done = context.WithCancel(context.Background())
	s.load = testutil.StartClients(4, 10*time.Millisecond, s.query)
	return s
}

// query sends one query to the next registered replica of cm's current
// version and records who answered, or the failure.
func (s *stream) query() {
	snap := s.h.store.Snapshot()
	mv, ok := snap.Current("cm")
	addrs := snap.Replicas("cm", mv.Version)
	if !ok || len(addrs) == 0 {
		s.fail(fmt.Sprintf("no replica of cm's current version %q registered", mv.Version))
		return
	}
	s.mu.Lock()
	addr := addrs[s.next%len(addrs)]
	s.next++
	c := s.clients[addr]
	if c == nil {
		c = rpc.NewClient(addr, rpc.ClientOptions{})
		c.Start(s.ctx)
		s.clients[addr] = c
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	hello, err := c.WaitReady(ctx)
	if err == nil {
		_, err = c.Predict(ctx, rpc.Float32, [][]byte{input})
	}
	if err != nil {
		s.fail(fmt.Sprintf("registered replica %s of cm:%s: %v", addr, mv.Version, err))
		return
	}
	if hello.ModelVersion != mv.Version {
		s.fail(fmt.Sprintf("registered replica %s of cm:%s is version %s", addr, mv.Version, hello.ModelVersion))
		return
	}
	s.mu.Lock()
	s.models["cm:"+mv.Version]++
	s.mu.Unlock()
}

func (s *stream) fail(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed++
	if len(s.errs) < 10 {
		s.errs = append(s.errs, why)
	}
}

// answered returns how many queries model (a model:version) has answered
// so far.
func (s *stream) answered(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.models[model]
}

// await waits until model (as for answered) has answered n more queries:
// traffic that really flowed around an event, whatever the machine's load.
func (s *stream) await(t *testing.T, model string, n int) {
	t.Helper()
	from := s.answered(model)
	testutil.Eventually(t, within, fmt.Sprintf("%d more answers from %q", n, model), func() bool { return s.answered(model) >= from+n })
}

// end stops the stream, closes its clients and logs what it got.
func (s *stream) end(t *testing.T) {
	t.Helper()
	s.load.Stop()
	s.done()
	for _, c := range s.clients {
		c.Close()
	}
	t.Logf("queries: %d failed; answers by model: %v; first problems: %q", s.failed, s.models, s.errs)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeployServeAndReplaceKilled deploys 2 replicas of costmodel, whose
// registered addresses answer over RPC, and docker-kills one: a new
// container replaces it, registered once it answers, and the replica's
// failure is the container's exit. That no query through a proxy is lost
// meanwhile is cmd/sloproxy's TestKilledContainerLosesNoQuery.
func TestDeployServeAndReplaceKilled(t *testing.T) {
	h := newHarness(t)
	took := h.deploy(h.version("1", 2))
	t.Logf("deploy to ready (2 replicas, HELLO and warm-up answered, registered): %v", took)
	h.serves("1")

	victim := h.containers("1")[0]
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
	h.serves("1")
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

// TestRolloutAndRollback rolls out v2 under a stream of queries sent to
// the registered replicas of the current version, rolls back to v1, and
// scales v1 down: a replica is registered only once it answers, and one
// that goes is withdrawn and drained before it stops, so no query sent to
// a registered replica fails.
func TestRolloutAndRollback(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.deploy(h.version("1", 2))
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
	if s.failed > 0 {
		t.Errorf("%d queries to registered replicas failed; want none", s.failed)
	}
}

// TestRestartAdopts closes the runtime and its manager, as a proxy that
// restarts does, and starts new ones: they adopt the running containers,
// which go on answering, instead of starting duplicates.
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
	h.serves("1")
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
