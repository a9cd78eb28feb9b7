package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/mux"
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

// Endpoint is one (method, path template) pair a router serves.
type Endpoint struct{ Method, Path string }

func (e Endpoint) String() string { return e.Method + " " + e.Path }

// RouterEndpoints lists what r serves, to compare with an OpenAPI
// document.
func RouterEndpoints(t *testing.T, r *mux.Router) []Endpoint {
	t.Helper()
	var eps []Endpoint
	err := r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			eps = append(eps, Endpoint{m, path})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return eps
}
