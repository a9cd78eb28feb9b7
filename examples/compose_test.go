package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
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

// TestComposeFile checks docker-compose.yml: Compose accepts it, the files
// it builds from and mounts exist, and the proxy configuration it mounts is
// valid.
func TestComposeFile(t *testing.T) {
	root := testutil.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]struct {
			Build   any      `yaml:"build"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"redis", "sloproxy", "sklearn"} {
		if _, ok := file.Services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	for name, s := range file.Services {
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
			paths = append(paths, strings.Split(v, ":")[0])
		}
		for _, p := range paths {
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
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

	compose := composeCommand()
	if compose == nil {
		t.Skip("SKIPPING `compose config`: neither `docker compose` nor `docker-compose` is installed; the file was checked only as YAML")
	}
	cmd := exec.Command(compose[0], append(compose[1:], "--file", filepath.Join(root, "docker-compose.yml"), "config", "--quiet")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s config: %v\n%s", strings.Join(compose, " "), err, out)
	}
}
