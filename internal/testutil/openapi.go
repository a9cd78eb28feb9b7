package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// LoadOpenAPI parses docs/NAME, an OpenAPI 3.0 document, as plain YAML.
func LoadOpenAPI(t *testing.T, name string) map[string]any {
	t.Helper()
	path := filepath.Join(RepoRoot(t), "docs", name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not valid YAML: %v", path, err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
		t.Fatalf("%s: openapi: %q; want 3.0.x", path, v)
	}
	return doc
}
