package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// TestSwarm runs the real binary with the swarm runtime on a one-node
// swarm the test makes (testutil.RequireSwarm) and, in order, on one
// swarm: deploys 2 replicas of costmodel with `sloproxy models deploy
// --runtime swarm`; under 300 queries a second removes one task's
// container, with no query failed and the replacement task registered;
// scales 2 → 4 → 1; rolls out version 2 and rolls back to 1; removes
// version 2's service by hand, which the runtime creates again; restarts the
// proxy, which adopts the service without touching its tasks; and checks
// that a task refuses a wrong RPC secret and serves the right one.
func TestSwarm(t *testing.T) {
	cli := testutil.RequireSwarm(t)
	owner := testutil.UniqueName("sloproxy-test-")
	image := testutil.BuildExampleImage(t, cli, "costmodel")
	testutil.RemoveServices(t, cli, docker.OwnerLabel, owner)
	const key = "swarm-test-rpc-key"
	t.Setenv(envAdminURL, "")
	t.Setenv(envAdminToken, "")
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: t}
runtimes: {process: {enabled: false}, swarm: {enabled: true, owner: %s, rpc_key: %s}}
apps:
  - {name: app, input_type: float32, slo: 2s, default_output: "-1", no_cache: true}
`, testutil.FreeAddr(t), testutil.FreeAddr(t), owner, key))
	global := []string{"--admin", "http://" + p.Admin, "--token", "t"}
	models := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCLI("models", append(args, global...)...)
		if err != nil {
			t.Fatalf("sloproxy models %v: %v\n%s%s\nproxy's log:\n%s", args, err, out, errOut, p.Logs)
		}
		return out
	}
	// live returns the registered replicas of cm's version v.
	live := func(v string) []string {
		m := getJSON[admin.ModelView](t, "http://"+p.Admin+"/api/v1/models/cm", "t")
		mv, _ := m.Version(v)
		return mv.LiveReplicas
	}
	// tasks returns the running tasks of cm's version v, by id, with
	// their containers.
	tasks := func(v string) map[string]string {
		list, err := cli.TaskList(t.Context(), swarm.TaskListOptions{Filters: filters.NewArgs(
			filters.Arg("label", docker.OwnerLabel+"="+owner), filters.Arg("label", docker.VersionLabel+"="+v),
			filters.Arg("desired-state", "running"))})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, tk := range list {
			if tk.Status.State == swarm.TaskStateRunning && tk.Status.ContainerStatus != nil {
				out[tk.ID] = tk.Status.ContainerStatus.ContainerID
			}
		}
		return out
	}
	// settled waits until version v runs n tasks, all registered.
	settled := func(t *testing.T, v string, n int) {
		t.Helper()
		testutil.Eventually(t, 2*time.Minute, fmt.Sprintf("%d running tasks of cm:%s, all registered", n, v), func() bool {
			return len(tasks(v)) == n && len(live(v)) == n
		})
	}

	out := models("deploy", "--runtime", "swarm", "--name", "cm", "--version", "1", "--image", image, "--input-type", "float32",
		"--replicas", "2", "--cpus", "0.25", "--memory", "64m", "--wait", "2m")
	t.Logf("models deploy --runtime swarm:\n%s", out)
	settled(t, "1", 2)
	if _, _, err := runCLI("apps", append([]string{"link", "app", "cm"}, global...)...); err != nil {
		t.Fatal(err)
	}
	q := startQueries("http://"+p.Query+"/apps/app/predict", 8) // 300 a second and more, where the machine keeps up
	q.await(t, 50)

	t.Run("task container removed", func(t *testing.T) {
		before := live("1")
		var victim string
		for _, c := range tasks("1") {
			victim = c
			break
		}
		removed := time.Now()
		if err := cli.ContainerRemove(t.Context(), victim, container.RemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 2*time.Minute, "a registered replacement of the removed task", func() bool {
			now := live("1")
			return len(now) == 2 && !slices.Equal(now, before) && !slices.Contains(slices.Collect(maps.Values(tasks("1"))), victim)
		})
		t.Logf("container removed to replacement registered, under load: %v (replicas %v → %v)", time.Since(removed), before, live("1"))
		q.await(t, 50)
		if q.failed > 0 {
			t.Errorf("%d queries failed; every query must be answered, by a model or with the default output", q.failed)
		}
	})

	t.Run("scale 2 to 4 to 1", func(t *testing.T) {
		for _, n := range []int{4, 1} {
			models("scale", "cm", "1", fmt.Sprint(n))
			settled(t, "1", n)
			q.await(t, 20)
		}
	})

	t.Run("roll out v2 and roll back", func(t *testing.T) {
		models("deploy", "--runtime", "swarm", "--name", "cm", "--version", "2", "--image", image, "--input-type", "float32",
			"--replicas", "1", "--cpus", "0.25", "--memory", "64m", "--wait", "2m")
		settled(t, "2", 1)
		testutil.Eventually(t, 2*time.Minute, "answers from cm:2", func() bool { return q.answeredBy("cm:2") >= 20 })
		models("rollback", "cm", "1")
		from := q.answeredBy("cm:1")
		testutil.Eventually(t, 2*time.Minute, "answers from cm:1 again", func() bool { return q.answeredBy("cm:1") >= from+20 })
	})
	t.Run("service removed by hand comes back", func(t *testing.T) {
		list, err := cli.ServiceList(t.Context(), swarm.ServiceListOptions{Filters: filters.NewArgs(
			filters.Arg("label", docker.OwnerLabel+"="+owner), filters.Arg("label", docker.VersionLabel+"=2"))})
		if err != nil || len(list) != 1 {
			t.Fatalf("the service of cm:2: %v, %v", list, err)
		}
		if err := cli.ServiceRemove(t.Context(), list[0].ID); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 2*time.Minute, "cm:2's service created again, its task registered", func() bool {
			now, _ := cli.ServiceList(t.Context(), swarm.ServiceListOptions{Filters: filters.NewArgs(
				filters.Arg("label", docker.OwnerLabel+"="+owner), filters.Arg("label", docker.VersionLabel+"=2"))})
			return len(now) == 1 && now[0].ID != list[0].ID && len(live("2")) == 1 && len(tasks("2")) == 1
		})
	})
	q.end(t)
	if q.failed > 0 {
		t.Errorf("%d queries failed over the whole run", q.failed)
	}

	// The restart is the test's own, not a subtest's: the restarted proxy
	// serves until the test ends.
	before, addrs := tasks("1"), live("1")
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	p = testutil.StartProxyIn(t, p.Dir, p.Config)
	t.Run("restart adopts", func(t *testing.T) {
		testutil.Eventually(t, 2*time.Minute, "the adopted tasks registered", func() bool { return slices.Equal(live("1"), addrs) })
		if after := tasks("1"); !maps.Equal(before, after) {
			t.Errorf("tasks before the restart %v, after %v: want the same, adopted", before, after)
		}
		if !strings.Contains(p.Logs.String(), "swarm runtime: adopted a service") {
			t.Error("the restarted proxy did not log its adoption of the service")
		}
	})

	t.Run("wrong RPC secret refused", func(t *testing.T) {
		addrs := live("1")
		for _, tc := range []struct {
			secret string
			want   func(error) bool
		}{
			{"a-wrong-secret", func(err error) bool { return rpc.IsCode(err, rpc.Unauthenticated) }},
			{"", func(err error) bool { return rpc.IsCode(err, rpc.Unauthenticated) }},
			{rpc.DeriveSecret([]byte(key), "cm", "1"), func(err error) bool { return err == nil }},
		} {
			if err := predictOnce(addrs[0], []byte(tc.secret)); !tc.want(err) {
				t.Errorf("a prediction with secret %q: %v", tc.secret, err)
			}
		}
		// The task logged the refusals (one per attempt: the wrong clients
		// retried until they gave up) and stays registered.
		var logs strings.Builder
		for _, c := range tasks("1") {
			rc, err := cli.ContainerLogs(t.Context(), c, container.LogsOptions{ShowStdout: true, ShowStderr: true})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = stdcopy.StdCopy(&logs, &logs, rc)
			rc.Close()
		}
		if n := strings.Count(logs.String(), "refused a peer that did not authenticate"); n < 2 {
			t.Errorf("the task logged %d refusals, want one or more for each wrong secret:\n%s", n, &logs)
		}
		if now := live("1"); !slices.Equal(now, addrs) {
			t.Errorf("registered replicas %v after the refusals, want %v", now, addrs)
		}
	})
}

// predictOnce connects to addr with secret (nil for none) and sends one
// prediction; it returns why the connection or the prediction failed.
func predictOnce(addr string, secret []byte) error {
	if len(secret) == 0 {
		secret = nil
	}
	c := rpc.NewClient(addr, rpc.ClientOptions{Secret: secret, MaxBackoff: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.Start(ctx)
	defer c.Close()
	if _, err := c.WaitReady(ctx); err != nil {
		return err // with the last connection attempt's failure
	}
	_, err := c.Predict(ctx, rpc.Float32, [][]byte{make([]byte, 12)})
	return err
}
