package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// composeCommand is Compose's command line here: the docker plugin, else
// the standalone docker-compose; nil when neither is installed.
func composeCommand() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	return nil
}

// composeServices reads the services of a Compose or stack file at the
// repository's root, and fails the test for each file that a service
// builds from or mounts and that does not exist.
func composeServices(t *testing.T, root, file string) map[string]composeService {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
		Configs  map[string]struct {
			File string `yaml:"file"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	for name, s := range f.Services {
		var paths []string
		switch b := s.Build.(type) {
		case string:
			paths = append(paths, filepath.Join(b, "Dockerfile"))
		case map[string]any:
			ctx, _ := b["context"].(string)
			df, _ := b["dockerfile"].(string)
			if df == "" {
				df = "Dockerfile"
			}
			paths = append(paths, filepath.Join(ctx, df))
		}
		for _, v := range s.Volumes {
			if src := strings.Split(v, ":")[0]; strings.HasPrefix(src, ".") {
				paths = append(paths, src) // a file of the repository, not of the host
			}
		}
		for _, p := range paths {
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s: service %s: %v", file, name, err)
			}
		}
	}
	for name, c := range f.Configs {
		if _, err := os.Stat(filepath.Join(root, c.File)); err != nil {
			t.Errorf("%s: config %s: %v", file, name, err)
		}
	}
	return f.Services
}

type composeService struct {
	Build   any      `yaml:"build"`
	Image   string   `yaml:"image"`
	Volumes []string `yaml:"volumes"`
}

// composeConfig runs `compose --file file config --quiet`, which checks the
// file against Compose's schema; it skips, saying so, where Compose is not
// installed.
func composeConfig(t *testing.T, root, file string) {
	t.Helper()
	compose := composeCommand()
	if compose == nil {
		t.Skipf("SKIPPING `compose config`: neither `docker compose` nor `docker-compose` is installed; %s was checked only as YAML", file)
	}
	cmd := exec.Command(compose[0], append(compose[1:], "--file", filepath.Join(root, file), "config", "--quiet")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s config %s: %v\n%s", strings.Join(compose, " "), file, err, out)
	}
}

// TestComposeFile checks docker-compose.yml: Compose accepts it, the files
// it builds from and mounts exist, and the proxy configuration it mounts is
// valid.
func TestComposeFile(t *testing.T) {
	root := testutil.RepoRoot(t)
	services := composeServices(t, root, "docker-compose.yml")
	for _, name := range []string{"redis", "sloproxy", "sklearn"} {
		if _, ok := services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "compose-test")
	c, err := config.Load(filepath.Join(root, "examples", "compose", "sloproxy.yaml"))
	if err != nil {
		t.Fatalf("the mounted configuration: %v", err)
	}
	if len(c.Apps) != 1 || c.Apps[0].Name != "digits" || c.Models[0].Addresses[0] != "sklearn:7000" {
		t.Errorf("the mounted configuration: apps %+v, models %+v", c.Apps, c.Models)
	}
	composeConfig(t, root, "docker-compose.yml")
}

// TestStackFile checks docker-stack.yml: the files it builds from and
// gives the proxy exist, the proxy's configuration is valid and runs the
// digits model on the swarm runtime from the image the stack builds, Redis
// is found through the Sentinel the stack runs, and Compose accepts the
// file (`docker stack deploy` reads the same format).
func TestStackFile(t *testing.T) {
	root := testutil.RepoRoot(t)
	services := composeServices(t, root, "docker-stack.yml")
	for _, name := range []string{"redis", "redis-replica", "sentinel", "sloproxy", "sklearn-digits"} {
		if _, ok := services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "stack-test")
	t.Setenv("SLOPROXY_RPC_KEY", "stack-test")
	c, err := config.Load(filepath.Join(root, "examples", "swarm", "sloproxy.yaml"))
	if err != nil {
		t.Fatalf("the proxy's configuration: %v", err)
	}
	if !c.Runtimes.Swarm.Enabled || len(c.Models) != 1 || c.Models[0].Runtime != "swarm" || c.Models[0].Image != services["sklearn-digits"].Image {
		t.Errorf("the proxy's configuration: swarm runtime %+v, models %+v; want the digits model on the swarm runtime, image %q",
			c.Runtimes.Swarm, c.Models, services["sklearn-digits"].Image)
	}
	if c.Redis.MasterName != "sloproxy" || !slices.Equal(c.Redis.Addrs, []string{"sentinel:26379"}) {
		t.Errorf("the proxy's redis %+v: want the stack's Sentinel", c.Redis)
	}
	composeConfig(t, root, "docker-stack.yml")
}
