package testutil

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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

// OpenAPIResolve follows a local reference such as
// #/components/schemas/Error; nil when it leads nowhere.
func OpenAPIResolve(doc map[string]any, ref string) any {
	if !strings.HasPrefix(ref, "#/") {
		return nil
	}
	var v any = doc
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

// CheckOpenAPIRefs reports every $ref in doc that does not resolve.
func CheckOpenAPIRefs(t *testing.T, doc map[string]any) {
	t.Helper()
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k == "$ref" {
					ref, _ := child.(string)
					if OpenAPIResolve(doc, ref) == nil {
						t.Errorf("%s: $ref %v does not resolve", at, child)
					}
					continue
				}
				walk(child, at+"/"+k)
			}
		case []any:
			for _, child := range v {
				walk(child, at)
			}
		}
	}
	walk(doc, "")
}

// CheckSchemaFields reports when doc's schema lists other properties than
// the JSON fields of typ, the Go type the API encodes or decodes for it.
func CheckSchemaFields(t *testing.T, doc map[string]any, schema string, typ reflect.Type) {
	t.Helper()
	schemas := Map(t, Map(t, doc["components"], "components")["schemas"], "schemas")
	s := Map(t, schemas[schema], schema)
	documented := slices.Sorted(maps.Keys(Map(t, s["properties"], schema+".properties")))
	fields := JSONFields(typ)
	slices.Sort(fields)
	if !slices.Equal(documented, fields) {
		t.Errorf("%s: properties %v; the Go type %v has %v", schema, documented, typ, fields)
	}
}

// JSONFields returns the JSON names of t's fields, embedded ones included.
func JSONFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-" || !f.IsExported():
		case f.Anonymous && tag == "":
			names = append(names, JSONFields(f.Type)...)
		case tag != "":
			names = append(names, tag)
		default:
			names = append(names, f.Name)
		}
	}
	return names
}

// Map asserts that v, a node of a YAML document, is a mapping.
func Map(t *testing.T, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a mapping, got %T", what, v)
	}
	return m
}

// DocumentedEndpoints lists the operations under an OpenAPI document's
// paths (the HTTP methods, not the paths' other keys).
func DocumentedEndpoints(t *testing.T, paths map[string]any) []Endpoint {
	t.Helper()
	var eps []Endpoint
	for path, item := range paths {
		for key := range Map(t, item, path) {
			switch key {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				eps = append(eps, Endpoint{Method: strings.ToUpper(key), Path: path})
			}
		}
	}
	return eps
}
