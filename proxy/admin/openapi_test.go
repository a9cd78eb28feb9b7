package admin

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// loadOpenAPI parses the API's OpenAPI document.
func loadOpenAPI(t *testing.T) map[string]any { return testutil.LoadOpenAPI(t, "openapi-admin.yaml") }

// registeredRoutes lists what the router serves.
func registeredRoutes(t *testing.T) []testutil.Endpoint {
	t.Helper()
	return testutil.RouterEndpoints(t, newHandler(state.NewStore(nil, state.Options{}), Options{Token: "x"}).router)
}

// TestOpenAPIDocumentsEveryRoute checks the document against the router:
// every route is documented, with its security and the statuses it may
// answer, and nothing else is.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	paths := asMap(t, doc["paths"], "paths")
	routes := registeredRoutes(t)
	if len(routes) < 15 {
		t.Fatalf("found only %d routes: %v", len(routes), routes)
	}
	for _, r := range routes {
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			item, ok := paths[r.Path]
			if !ok {
				t.Fatalf("path %s is not in %s", r.Path, "docs/openapi-admin.yaml")
			}
			op, ok := asMap(t, item, r.Path)[strings.ToLower(r.Method)]
			if !ok {
				t.Fatalf("%s %s is not in %s", r.Method, r.Path, "docs/openapi-admin.yaml")
			}
			opm := asMap(t, op, r.Method+" "+r.Path)
			responses := asMap(t, opm["responses"], "responses")
			open := r.Path == pathHealthz
			if sec, ok := opm["security"]; open != (ok && reflect.DeepEqual(sec, []any{})) {
				t.Errorf("security: %v; want [] exactly for the health check, inherited elsewhere", sec)
			}
			if _, ok := responses["401"]; ok == open {
				t.Errorf("401 documented: %v; want it on every endpoint but the health check", ok)
			}
			if !slices.ContainsFunc(slices.Collect(maps.Keys(responses)), func(s string) bool { return strings.HasPrefix(s, "2") }) {
				t.Errorf("no 2xx response documented")
			}
		})
	}
	for path, item := range paths {
		for method := range asMap(t, item, path) {
			if method == "parameters" {
				continue
			}
			if !slices.Contains(routes, testutil.Endpoint{Method: strings.ToUpper(method), Path: path}) {
				t.Errorf("%s %s is documented but not routed", strings.ToUpper(method), path)
			}
		}
	}
}

// TestOpenAPIRefsResolve checks that every $ref points into the document.
func TestOpenAPIRefsResolve(t *testing.T) {
	doc := loadOpenAPI(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k == "$ref" {
					if resolve(doc, child.(string)) == nil {
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

// resolve follows a local reference such as #/components/schemas/App.
func resolve(doc map[string]any, ref string) any {
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

// TestOpenAPISchemasMatchTypes checks that each schema lists exactly the
// JSON fields of the Go type the API encodes or decodes for it.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	schemas := asMap(t, asMap(t, loadOpenAPI(t)["components"], "components")["schemas"], "schemas")
	cases := []struct {
		schema string
		typ    any
	}{
		{"App", App{}},
		{"AppView", AppView{}},
		{"AppList", AppList{}},
		{"RuntimeSpec", state.RuntimeSpec{}},
		{"VersionRequest", state.ModelVersion{}},
		{"VersionView", VersionView{}},
		{"ModelView", ModelView{}},
		{"ModelList", ModelList{}},
		{"CurrentRequest", CurrentRequest{}},
		{"ReplicasRequest", ReplicasRequest{}},
		{"PurgeRequest", PurgeRequest{}},
		{"Health", Health{}},
		{"Error", ErrorBody{}},
	}
	for _, c := range cases {
		t.Run(c.schema, func(t *testing.T) {
			s := asMap(t, schemas[c.schema], c.schema)
			documented := slices.Sorted(maps.Keys(asMap(t, s["properties"], c.schema+".properties")))
			fields := jsonFields(reflect.TypeOf(c.typ))
			slices.Sort(fields)
			if !slices.Equal(documented, fields) {
				t.Errorf("properties %v; the Go type %T has %v", documented, c.typ, fields)
			}
		})
	}
}

// jsonFields returns the JSON names of t's fields, embedded ones included.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-" || !f.IsExported():
		case f.Anonymous && tag == "":
			names = append(names, jsonFields(f.Type)...)
		case tag != "":
			names = append(names, tag)
		default:
			names = append(names, f.Name)
		}
	}
	return names
}

func asMap(t *testing.T, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a mapping, got %T", what, v)
	}
	return m
}
