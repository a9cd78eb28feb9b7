package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// TestKilledContainerLosesNoQuery runs the real binary with the docker
// runtime serving the app "app" from two containers of costmodel, and
// docker-kills one under a steady stream of queries: every query is
// answered, by a model or with the flagged default output, and a new
// container replaces the killed one. The runtime's own side of a kill (the
// replica's failure, its restart) is containers/docker's
// TestDeployServeAndReplaceKilled.
func TestKilledContainerLosesNoQuery(t *testing.T) {
	cli := testutil.RequireDocker(t)
	owner := testutil.UniqueName("sloproxy-test-")
	testutil.RemoveContainers(t, cli, docker.OwnerLabel, owner)
	image := testutil.BuildExampleImage(t, cli, "costmodel")
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: t}
runtimes: {process: {enabled: false}, docker: {enabled: true, owner: %s, drain_timeout: 500ms}}
apps:
  - {name: app, input_type: float32, slo: 2s, default_output: "-1", no_cache: true, models: [cm]}
models:
  - {name: cm, version: "1", input_type: float32, runtime: docker, image: %s, replicas: 2, cpus: 0.5, memory_bytes: 67108864}
`, testutil.FreeAddr(t), testutil.FreeAddr(t), owner, image))

	// running returns the ids of the owner's running containers and the
	// addresses their RPC ports are published on, each sorted.
	running := func() (ids, addrs []string) {
		list, err := cli.ContainerList(t.Context(), container.ListOptions{
			Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+owner))})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			ids = append(ids, c.ID)
			for _, port := range c.Ports {
				if port.IP == "127.0.0.1" && port.PublicPort != 0 {
					addrs = append(addrs, net.JoinHostPort(port.IP, strconv.Itoa(int(port.PublicPort))))
				}
			}
		}
		slices.Sort(ids)
		slices.Sort(addrs)
		return ids, addrs
	}
	// served reports whether the proxy has registered exactly the two
	// running containers as cm's live replicas, none else.
	served := func() bool {
		m := getJSON[admin.ModelView](t, "http://"+p.Admin+"/api/v1/models/cm", "t")
		v, _ := m.Version("1")
		ids, addrs := running()
		return len(ids) == 2 && slices.Equal(v.LiveReplicas, addrs)
	}
	testutil.Eventually(t, 2*time.Minute, "two containers of cm:1 live", served)

	q := startQueries("http://"+p.Query+"/apps/app/predict", 4)
	q.await(t, 20) // traffic before the kill
	before, _ := running()
	victim := before[0]
	killed := time.Now()
	if err := cli.ContainerKill(t.Context(), victim, "KILL"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Minute, "a live replacement of the killed container", func() bool {
		ids, _ := running()
		return !slices.Contains(ids, victim) && served()
	})
	t.Logf("kill to replaced (new container live in the proxy), under a steady stream: %v", time.Since(killed))
	q.await(t, 20) // traffic after the replacement
	q.end(t)
	if q.failed > 0 {
		t.Errorf("%d queries failed; every query must be answered, by a model or with the default output", q.failed)
	}
}

// queries is a steady stream of queries to one predict URL, from a few
// clients.
type queries struct {
	url     string
	client  *http.Client
	clients *testutil.Clients

	mu                sync.Mutex
	began             time.Time
	byModel, defaults int            // answers by a model, and with the default output
	models            map[string]int // answers by model:version
	failed            int
	errs              []string // the first problems
}

// startQueries sends queries from n clients, each every 10 ms (100 n
// queries a second when the machine keeps up), until the returned stream's
// end is called.
func startQueries(url string, n int) *queries {
	q := &queries{url: url, client: &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}, models: map[string]int{}, began: time.Now()}
	q.clients = testutil.StartClients(n, 10*time.Millisecond, q.query)
	return q
}

// query sends one query and records whether a model answered it, the
// default output did, or it failed.
func (q *queries) query() {
	resp, err := q.client.Post(q.url, "application/json", strings.NewReader(`{"input": [1, 2, 3]}`))
	if err != nil {
		q.record(false, err.Error())
		return
	}
	defer resp.Body.Close()
	var body struct {
		Default     bool   `json:"default"`
		Explanation string `json:"default_explanation"`
		Model       string `json:"model"`
	}
	switch err := json.NewDecoder(resp.Body).Decode(&body); {
	case err != nil || resp.StatusCode != http.StatusOK:
		q.record(false, fmt.Sprintf("status %d, %v", resp.StatusCode, err))
	case body.Default:
		q.record(true, "default output: "+body.Explanation)
	case body.Model == "":
		q.record(false, "an answer that is not the default names no model")
	default:
		q.mu.Lock()
		q.models[body.Model]++
		q.mu.Unlock()
		q.record(true, "")
	}
}

// answeredBy returns how many queries model (a model:version) answered.
func (q *queries) answeredBy(model string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.models[model]
}

// record counts one query: answered (by a model when why is empty, else
// with the default output) or failed, for why.
func (q *queries) record(answered bool, why string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case answered && why == "":
		q.byModel++
		return
	case answered:
		q.defaults++
	default:
		q.failed++
	}
	if len(q.errs) < 10 {
		q.errs = append(q.errs, why)
	}
}

func (q *queries) answeredByModel() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byModel
}

// await waits until models have answered n more queries: traffic that
// really flowed around an event, whatever the machine's load.
func (q *queries) await(t *testing.T, n int) {
	t.Helper()
	from := q.answeredByModel()
	testutil.Eventually(t, 2*time.Minute, fmt.Sprintf("%d more answers by a model", n), func() bool { return q.answeredByModel() >= from+n })
}

// end stops the stream, closes its connections and logs what it got.
func (q *queries) end(t *testing.T) {
	t.Helper()
	q.clients.Stop()
	q.client.CloseIdleConnections()
	n := q.byModel + q.defaults + q.failed
	t.Logf("queries: %d in %v (%.0f/s): %d answered by a model %v, %d default outputs, %d failed; first problems: %q",
		n, time.Since(q.began).Round(time.Millisecond), float64(n)/time.Since(q.began).Seconds(), q.byModel, q.models, q.defaults, q.failed, q.errs)
}
