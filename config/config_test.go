package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFullFile(t *testing.T) {
	c, err := Load("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Apps[0].SLO != 50*time.Millisecond || c.Models[0].Replicas != 2 || c.Models[1].Runtime != "external" {
		t.Fatalf("parsed %+v", c)
	}
	if c.Limits.MaxInputBatch != Default.Limits.MaxInputBatch {
		t.Fatalf("defaults not kept under a partial limits block: %+v", c.Limits)
	}
	if c.Models[0].Runtime != "process" {
		t.Fatalf("runtime default: %q", c.Models[0].Runtime)
	}
}

func TestBadFiles(t *testing.T) {
	tests := map[string]string{
		"unknown-field.bad.yml":           "field default_ouptut not found",
		"unknown-model.bad.yml":           `apps[0].models[0]: model "missing" is not defined under models`,
		"type-mismatch.bad.yml":           `apps[0].models[0]: model "m" takes float64 but app "a" takes float32`,
		"no-slo.bad.yml":                  "apps[0]: invalid: app \"a\": slo_ms 0: must be positive",
		"bad-name.bad.yml":                "models[0]: invalid: model \"Bad Name\": name: must match",
		"process-without-command.bad.yml": "models[0]:",
		"bad-log-format.bad.yml":          `log.format "xml": must be json or console`,
	}
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) != len(tests) {
		t.Fatalf("%d bad files, %d expectations", len(files), len(tests))
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", name))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
		})
	}
}

func TestAdminTokenFromEnv(t *testing.T) {
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "from-env")
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminToken() != "from-env" {
		t.Fatalf("token %q", c.AdminToken())
	}
}
