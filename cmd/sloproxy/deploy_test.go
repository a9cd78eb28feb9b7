package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

func TestParseGPUs(t *testing.T) {
	for _, tc := range []struct {
		in    string
		count int
		ids   []string
		err   bool
	}{
		{"", 0, nil, false},
		{"all", -1, nil, false},
		{"2", 2, nil, false},
		{"device=0,GPU-3f2c", 0, []string{"0", "GPU-3f2c"}, false},
		{"0", 0, nil, true},
		{"two", 0, nil, true},
		{"device=0,", 0, nil, true},
	} {
		count, ids, err := parseGPUs(tc.in)
		if count != tc.count || !slices.Equal(ids, tc.ids) || (err != nil) != tc.err {
			t.Errorf("parseGPUs(%q) = %d, %q, %v; want %d, %q, error %v", tc.in, count, ids, err, tc.count, tc.ids, tc.err)
		}
	}
}

// TestModelsDeploy runs `sloproxy models deploy` against a proxy whose
// docker runtime starts the costmodel image on the real Engine: progress
// while the replicas come up, traffic moved once they are ready, rollback,
// scaling, and clear errors for a missing image and a container that exits
// at start.
func TestModelsDeploy(t *testing.T) {
	cli := testutil.RequireDocker(t)
	owner := testutil.UniqueName("sloproxy-test-")
	testutil.RemoveContainers(t, cli, docker.OwnerLabel, owner)
	image := testutil.BuildExampleImage(t, cli, "costmodel")
	t.Setenv(envAdminURL, "")
	t.Setenv(envAdminToken, "")
	s := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %s}
runtimes: {process: {enabled: false}, docker: {enabled: true, owner: %s, drain_timeout: 500ms}}
`, cliTestToken, owner))
	global := []string{"--admin", "http://" + s.admin, "--token", cliTestToken}
	deploy := func(version, img string, extra ...string) (string, error) {
		args := append([]string{"deploy", "--name", "cm", "--version", version, "--image", img, "--input-type", "float32",
			"--replicas", "2", "--cpus", "0.5", "--memory", "64m", "--wait", "2m"}, extra...)
		start := time.Now()
		out, _, err := runCLI("models", append(args, global...)...)
		t.Logf("models deploy %s (%v):\n%s", version, time.Since(start), out)
		return out, err
	}
	for _, step := range []struct {
		version string
		want    []string
	}{
		{"1", []string{"registered model cm version 1", "0/2 replicas ready", "2/2 replicas ready", "current version 1"}},
		{"2", []string{"2/2 replicas ready", "traffic moved to version 2; roll back with: sloproxy models rollback cm 1", "current version 2"}},
	} {
		out, err := deploy(step.version, image)
		if err != nil {
			t.Fatalf("deploy %s: %v", step.version, err)
		}
		for _, w := range step.want {
			if !strings.Contains(out, w) {
				t.Errorf("deploy %s: output lacks %q", step.version, w)
			}
		}
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"rollback", "cm", "1"}, "model cm: current version 1"},
		{[]string{"scale", "cm", "2", "1"}, "model cm version 2: 1 replica wanted"},
		{[]string{"list"}, "cm    1        float32  1,2"},
	} {
		out, _, err := runCLI("models", append(step.args, global...)...)
		if err != nil || !strings.Contains(squeeze(out), squeeze(step.want)) {
			t.Errorf("models %v = %q, %v; want %q", step.args, out, err, step.want)
		}
	}

	_, err := deploy("3", "sloproxy-test/no-such-image:1")
	t.Logf("missing image: %v", err)
	if err == nil || !strings.Contains(err.Error(), "image not found on the Docker Engine") || !strings.Contains(err.Error(), "no-such-image") {
		t.Errorf("deploy of a missing image: %v, want an error naming the image as not found", err)
	}
	_, err = deploy("4", image, "--env", "COSTMODEL_A=not-a-duration")
	t.Logf("container that exits at start: %v", err)
	if err == nil || !strings.Contains(err.Error(), "exited with status 1") || !strings.Contains(err.Error(), `COSTMODEL_A="not-a-duration"`) {
		t.Errorf("deploy of a container that exits at start: %v, want its exit status and last log lines", err)
	}
}
