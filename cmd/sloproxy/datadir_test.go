package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// call sends a request with a JSON body (none if body is nil) and the
// bearer token, and returns the status and the answer's body.
func call(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, raw
}

// mustCall is call that fails the test unless the status is 2xx.
func mustCall(t *testing.T, method, url, token string, body any) []byte {
	t.Helper()
	status, raw := call(t, method, url, token, body)
	if status/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, url, status, raw)
	}
	return raw
}

// TestRestartKeepsState restarts the real binary on the embedded default
// (no Redis, no data_dir set): what the admin API created (an app, two
// models, links, the app's selection spec), what the app's exp3 policy
// learned from feedback, and the generated admin token all come back from
// the data directory beside the configuration file. A second proxy on the
// same directory refuses to start, saying why.
func TestRestartKeepsState(t *testing.T) {
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "") // no token configured: the proxy generates one
	noop := testutil.BuildGo(t, "./examples/noop")
	dir := t.TempDir()
	path := filepath.Join(dir, "sloproxy.yaml")
	yaml := fmt.Sprintf("listen: %s\nadmin: {listen: %s}\nruntimes: {process: {port_base: %d}}\ncache: {enabled: false}\n",
		testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreePort(t))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	first := testutil.StartProxyIn(t, dir, path)
	tokenFile := filepath.Join(dir, "sloproxy-data", "admin-token")
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("the generated admin token is not kept: %v\n%s", err, first.Logs)
	}
	token := strings.TrimSpace(string(raw))
	if info, _ := os.Stat(tokenFile); info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v; want 0600", tokenFile, info.Mode().Perm())
	}
	if !strings.Contains(first.Logs.String(), token) {
		t.Errorf("the first start does not log the token it generated")
	}

	api := "http://" + first.Admin + "/api/v1"
	for _, m := range []string{"a", "b"} {
		mustCall(t, "POST", api+"/models/"+m+"/versions", token, map[string]any{
			"version": "1", "input_type": "string",
			"runtime": map[string]any{"kind": "process", "command": []string{noop, "--input-type", "string"}},
		})
	}
	mustCall(t, "POST", api+"/apps", token, map[string]any{"name": "pick", "input_type": "string", "slo_ms": 2000, "default_output": `"none"`})
	for _, m := range []string{"a", "b"} {
		mustCall(t, "PUT", api+"/apps/pick/links/"+m, token, nil)
	}
	mustCall(t, "PUT", api+"/apps/pick/selection", token, map[string]any{"policy": "exp3", "eta": 0.5})

	// Queries with feedback that says model a is right and b is wrong,
	// until b has been wrong at least once (exp3 learns from losses).
	query := "http://" + first.Query + "/apps/pick"
	wrong := 0
	for i := 0; i < 20 || wrong == 0; i++ {
		if i == 500 {
			t.Fatal("exp3 never chose model b in 500 queries")
		}
		input := fmt.Sprintf("x%d", i)
		var a struct {
			answer
			Model string `json:"model"`
		}
		testutil.Eventually(t, 30*time.Second, "a model answers", func() bool {
			status, raw := call(t, "POST", query+"/predict", "", map[string]any{"input": input})
			return status == http.StatusOK && json.Unmarshal(raw, &a) == nil && !a.Default
		})
		label := input
		if strings.HasPrefix(a.Model, "b") {
			label = "wrong"
			wrong++
		}
		mustCall(t, "POST", query+"/feedback", "", map[string]any{"query_id": a.QueryID, "label": label})
	}
	learned := selectionStatus(t, api, token)
	if reflect.DeepEqual(learned.Shares, map[string]float64{"a": 0.5, "b": 0.5}) {
		t.Fatalf("nothing learned from the feedback: %+v", learned)
	}
	before := getJSON[admin.AppView](t, api+"/apps/pick", token)
	if err := first.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	second := testutil.StartProxyIn(t, dir, path)
	if strings.Contains(second.Logs.String(), token) {
		t.Errorf("a start that reads the kept token logs it")
	}
	api = "http://" + second.Admin + "/api/v1"
	if got := getJSON[admin.AppView](t, api+"/apps/pick", token); !reflect.DeepEqual(got, before) {
		t.Errorf("after the restart, the app is %+v; want %+v", got, before)
	}
	if got := selectionStatus(t, api, token); !reflect.DeepEqual(got.Shares, learned.Shares) || got.Source != learned.Source {
		t.Errorf("after the restart, the selection is %+v; want %+v", got, learned)
	}
	testutil.Eventually(t, 30*time.Second, "the restarted models answer", func() bool {
		status, raw := call(t, "POST", "http://"+second.Query+"/apps/pick/predict", "", map[string]any{"input": "again"})
		var a answer
		return status == http.StatusOK && json.Unmarshal(raw, &a) == nil && !a.Default
	})

	// Another proxy, on other listeners, whose file sits in the same
	// directory and so names the same data directory.
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, fmt.Appendf(nil, "listen: %s\nadmin: {listen: %s}\n", testutil.FreeAddr(t), testutil.FreeAddr(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testutil.BuildGo(t, "./cmd/sloproxy"), "serve", "--config", other).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is locked by another process") || !strings.Contains(string(out), "sloproxy-data") {
		t.Errorf("a second proxy on the same data directory: %v\n%s\nwant it to fail, naming the directory as locked", err, out)
	}
}

func selectionStatus(t *testing.T, api, token string) struct {
	Shares map[string]float64 `json:"shares"`
	Source string             `json:"source"`
} {
	t.Helper()
	return getJSON[struct {
		Shares map[string]float64 `json:"shares"`
		Source string             `json:"source"`
	}](t, api+"/apps/pick/selection", token)
}

func getJSON[T any](t *testing.T, url, token string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(mustCall(t, "GET", url, token, nil), &v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}

// TestRestartAdoptsDockerReplicas deploys a version with two replicas on
// the real Docker Engine through the admin API of the real binary on the
// embedded default, restarts the binary, and checks that it adopts the
// two running containers: the same ids, no others, both registered again.
func TestRestartAdoptsDockerReplicas(t *testing.T) {
	cli := testutil.RequireDocker(t)
	owner := testutil.UniqueName("sloproxy-test-")
	testutil.RemoveContainers(t, cli, docker.OwnerLabel, owner)
	image := testutil.BuildExampleImage(t, cli, "costmodel")
	dir := t.TempDir()
	path := filepath.Join(dir, "sloproxy.yaml")
	yaml := fmt.Sprintf("listen: %s\nadmin: {listen: %s, token: t}\nruntimes: {process: {enabled: false}, docker: {enabled: true, owner: %s}}\n",
		testutil.FreeAddr(t), testutil.FreeAddr(t), owner)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	running := func() []string {
		list, err := cli.ContainerList(t.Context(), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+owner))})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID+" "+string(c.State))
		}
		slices.Sort(ids)
		return ids
	}
	live := func(p *testutil.Proxy) []string {
		m := getJSON[admin.ModelView](t, "http://"+p.Admin+"/api/v1/models/cm", "t")
		v, _ := m.Version("1")
		return v.LiveReplicas
	}

	first := testutil.StartProxyIn(t, dir, path)
	mustCall(t, "POST", "http://"+first.Admin+"/api/v1/models/cm/versions", "t", map[string]any{
		"version": "1", "input_type": "float32", "replicas": 2,
		"runtime": map[string]any{"kind": "docker", "image": image},
	})
	testutil.Eventually(t, 2*time.Minute, "two replicas live", func() bool { return len(live(first)) == 2 })
	containers, addrs := running(), live(first)
	if len(containers) != 2 {
		t.Fatalf("containers before the restart: %v; want 2 running", containers)
	}
	if err := first.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := running(); !reflect.DeepEqual(got, containers) {
		t.Fatalf("stopping the proxy changed its containers from %v to %v", containers, got)
	}

	second := testutil.StartProxyIn(t, dir, path)
	testutil.Eventually(t, time.Minute, "the adopted replicas live", func() bool { return reflect.DeepEqual(live(second), addrs) })
	// The adoption is settled once the proxy reports the replicas ready;
	// the log then shows whether anything was removed or started.
	testutil.Eventually(t, time.Minute, "the replicas ready again", func() bool {
		return strings.Count(second.Logs.String(), `"adopted":true`) == 2
	})
	if got := running(); !reflect.DeepEqual(got, containers) {
		t.Errorf("after the restart the owner's containers are %v; want the same two, %v", got, containers)
	}
	if logs := second.Logs.String(); strings.Contains(logs, "removing a container") {
		t.Errorf("the restarted proxy removed containers:\n%s", logs)
	}
}

// TestOpenDataDir: where data_dir resolves, and the errors that name what
// to fix.
func TestOpenDataDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		dataDir string
		want    string // the directory opened
		err     string // part of the error; empty: none
	}{
		{"default: beside the file", "", filepath.Join(dir, "sloproxy-data"), ""},
		{"relative to the file", "state", filepath.Join(dir, "state"), ""},
		{"absolute", filepath.Join(dir, "abs"), filepath.Join(dir, "abs"), ""},
		{"under a file", "a-file/data", "", "not a directory (without redis.addr the proxy keeps its state there"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := openDataDir(&config.Config{DataDir: c.dataDir}, dir)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v; want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.path != c.want {
				t.Errorf("opened %s; want %s", d.path, c.want)
			}
			if info, err := os.Stat(c.want); err != nil || info.Mode().Perm() != 0o700 {
				t.Errorf("the directory: %v, %v; want mode 0700", info.Mode().Perm(), err)
			}
		})
	}

	t.Run("empty token file", func(t *testing.T) {
		d, err := openDataDir(&config.Config{DataDir: "empty-token"}, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := os.WriteFile(filepath.Join(d.path, tokenFile), []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := d.adminToken(zap.NewNop()); err == nil || !strings.Contains(err.Error(), "admin-token is empty: delete it") {
			t.Errorf("an empty token file: %v; want an error saying to delete it", err)
		}
	})
}
