package testutil

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// TestLabel marks every image and container that tests create, so that
// what a crashed test left behind can be found: docker ps -a --filter
// label=io.sloproxy.test.
const TestLabel = "io.sloproxy.test"

// BuildLabel holds an image's own tag (BuildExampleImage).
const BuildLabel = "io.sloproxy.test.build"

// RequireDocker skips the test, saying so loudly, when `docker info` fails
// (no Docker Engine here), and otherwise returns a client of the Engine,
// closed when the test ends.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("SKIPPING: NO DOCKER ENGINE: `docker info` failed (%v); this test needs a running Docker Engine.\n%s", err, out)
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// UniqueName returns prefix followed by a random suffix, for names of images
// and container owners that no other test uses.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

var staticBuilds sync.Map // package path → *buildResult

// BuildStaticGo builds the main package pkg (e.g. "./examples/noop") with
// CGO_ENABLED=0, once per test binary, and returns the executable's path:
// a static binary that runs in a FROM scratch image.
func BuildStaticGo(t testing.TB, pkg string) string {
	t.Helper()
	v, _ := staticBuilds.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "sloproxy-static-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-trimpath", "-o", b.path, pkg)
		cmd.Dir = RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// BuildExampleImage builds the image of a Go example (such as "costmodel"
// or "noop") through the Engine API's build endpoint: its own Dockerfile,
// FROM scratch, with the static binary, in a tar context. The image, tagged
// with a unique name that it returns, is removed when the test ends.
func BuildExampleImage(t testing.TB, cli *client.Client, example string) string {
	t.Helper()
	bin := BuildStaticGo(t, "./examples/"+example)
	root := RepoRoot(t)
	dockerfile, err := os.ReadFile(filepath.Join(root, "examples", example, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, dockerfile}, {example, 0o755, binary}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	tag := UniqueName("sloproxy-test/" + example + ":") // a tag may hold hex digits
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The tag as a label too makes each build's image its own: identical
	// builds by test binaries running at once would otherwise share one
	// image id, and one binary's clean-up could remove the image another's
	// build was about to tag.
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true,
		Labels: map[string]string{TestLabel: "1", BuildLabel: tag}})
	if err != nil {
		t.Fatalf("building the %s image: %v", example, err)
	}
	defer resp.Body.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		t.Fatalf("building the %s image: %v", example, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The image's containers first: an image in use would only lose
		// its tag. Only those created from this tag, which the ancestor
		// filter alone does not guarantee, since it matches by image.
		removeContainers(ctx, t, cli, filters.NewArgs(filters.Arg("ancestor", tag)), func(c container.Summary) bool { return c.Image == tag })
		if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Logf("removing image %s: %v", tag, err)
		}
	})
	return tag
}

// RemoveContainers removes, when the test ends, every container labelled
// key=value, running or not.
func RemoveContainers(t testing.TB, cli *client.Client, key, value string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		removeContainers(ctx, t, cli, filters.NewArgs(filters.Arg("label", key+"="+value)), nil)
	})
}

// removeContainers removes the containers that f selects and keep (nil:
// all) accepts, running or not.
func removeContainers(ctx context.Context, t testing.TB, cli *client.Client, f filters.Args, keep func(container.Summary) bool) {
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Logf("listing containers %v: %v", f, err)
		return
	}
	for _, c := range list {
		if keep != nil && !keep(c) {
			continue
		}
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !client.IsErrNotFound(err) {
			t.Logf("removing container %s: %v", c.ID, err)
		}
	}
}
