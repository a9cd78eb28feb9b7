package proxy

import (
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// loadQueryOpenAPI parses the API's OpenAPI document.
func loadQueryOpenAPI(t *testing.T) map[string]any {
	return testutil.LoadOpenAPI(t, "openapi-query.yaml")
}

// endpoint is one (method, path template) pair.
type endpoint = testutil.Endpoint

// servedEndpoints walks the router that New builds, which Handler serves
// (the query path's fast path only shortcuts two of its routes).
func servedEndpoints(t *testing.T) []endpoint {
	t.Helper()
	return testutil.RouterEndpoints(t, New(Options{Store: state.NewStore(nil, state.Options{})}).router)
}

// documentedEndpoints lists the operations under the document's paths.
func documentedEndpoints(t *testing.T, paths map[string]any) []endpoint {
	t.Helper()
	var eps []endpoint
	for path, item := range paths {
		for key := range oaMap(t, item, path) {
			switch key {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				eps = append(eps, endpoint{Method: strings.ToUpper(key), Path: path})
			}
		}
	}
	return eps
}

// TestOpenAPIQueryDocumentsEveryRoute checks that the document lists
// exactly the (method, path) pairs the router serves.
func TestOpenAPIQueryDocumentsEveryRoute(t *testing.T) {
	doc := loadQueryOpenAPI(t)
	served := servedEndpoints(t)
	if len(served) < 12 {
		t.Fatalf("found only %d routes: %v", len(served), served)
	}
	documented := documentedEndpoints(t, oaMap(t, doc["paths"], "paths"))
	for _, e := range served {
		if !slices.Contains(documented, e) {
			t.Errorf("%v is served but not in %s", e, "docs/openapi-query.yaml")
		}
	}
	for _, e := range documented {
		if !slices.Contains(served, e) {
			t.Errorf("%v is in %s but not served", e, "docs/openapi-query.yaml")
		}
	}
}

var pathVar = regexp.MustCompile(`\{([^}/]+)\}`)

// TestOpenAPIQueryOperations checks each operation: a unique operationId,
// a 2xx answer, the path's variables declared as path parameters, and every
// error answer in the {"error": ...} shape.
func TestOpenAPIQueryOperations(t *testing.T) {
	doc := loadQueryOpenAPI(t)
	paths := oaMap(t, doc["paths"], "paths")
	ids := map[string]endpoint{}
	for _, e := range documentedEndpoints(t, paths) {
		t.Run(e.String(), func(t *testing.T) {
			item := oaMap(t, paths[e.Path], e.Path)
			op := oaMap(t, item[strings.ToLower(e.Method)], e.String())

			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("no operationId")
			} else if other, dup := ids[id]; dup {
				t.Errorf("operationId %q is also %v's", id, other)
			}
			ids[id] = e

			var params []string
			for _, list := range []any{item["parameters"], op["parameters"]} {
				for _, p := range oaList(list) {
					pm := oaMap(t, oaDeref(t, doc, p), "parameter")
					if pm["in"] == "path" {
						params = append(params, pm["name"].(string))
					}
				}
			}
			var vars []string
			for _, m := range pathVar.FindAllStringSubmatch(e.Path, -1) {
				vars = append(vars, m[1])
			}
			slices.Sort(params)
			slices.Sort(vars)
			if !slices.Equal(params, vars) {
				t.Errorf("path parameters %v; the path has %v", params, vars)
			}

			responses := oaMap(t, op["responses"], "responses")
			codes := slices.Sorted(maps.Keys(responses))
			if !slices.ContainsFunc(codes, func(s string) bool { return strings.HasPrefix(s, "2") }) {
				t.Errorf("no 2xx response documented")
			}
			for _, code := range codes {
				if strings.HasPrefix(code, "2") {
					continue
				}
				if n, err := strconv.Atoi(code); err != nil || http.StatusText(n) == "" {
					t.Errorf("response %s is not an HTTP status", code)
				}
				resp := oaMap(t, oaDeref(t, doc, responses[code]), code)
				media := oaMap(t, oaMap(t, resp["content"], code+" content")["application/json"], code+" application/json")
				if ref, _ := oaMap(t, media["schema"], code+" schema")["$ref"].(string); ref != "#/components/schemas/Error" {
					t.Errorf("response %s: schema %v; want the Error schema", code, media["schema"])
				}
			}
		})
	}
}

// TestOpenAPIQueryRefsResolve checks that every $ref points into the
// document.
func TestOpenAPIQueryRefsResolve(t *testing.T) {
	doc := loadQueryOpenAPI(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k == "$ref" {
					ref, _ := child.(string)
					if oaResolve(doc, ref) == nil {
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

// TestOpenAPIQuerySchemasMatchTypes checks that the request schemas list
// exactly the JSON fields of the Go types the handlers decode them into.
// (The answers are written by hand, field by field; the handlers' tests
// check those.)
func TestOpenAPIQuerySchemasMatchTypes(t *testing.T) {
	schemas := oaMap(t, oaMap(t, loadQueryOpenAPI(t)["components"], "components")["schemas"], "schemas")
	cases := []struct {
		schema string
		typ    reflect.Type
	}{
		{"PredictRequest", reflect.TypeFor[predictRequest]()},
		{"InferenceRequest", reflect.TypeFor[oipInferRequest]()},
		{"RequestTensor", reflect.TypeFor[oipTensor]()},
		{"RequestedOutput", oaField(t, reflect.TypeFor[oipInferRequest](), "Outputs").Elem()},
		{"TensorMetadata", reflect.TypeFor[oipTensorMeta]()},
	}
	for _, c := range cases {
		t.Run(c.schema, func(t *testing.T) {
			s := oaMap(t, schemas[c.schema], c.schema)
			documented := slices.Sorted(maps.Keys(oaMap(t, s["properties"], c.schema+".properties")))
			fields := oaJSONFields(c.typ)
			slices.Sort(fields)
			if !slices.Equal(documented, fields) {
				t.Errorf("properties %v; the Go type %v has %v", documented, c.typ, fields)
			}
		})
	}
}

// oaField returns the type of t's field name.
func oaField(tb testing.TB, t reflect.Type, name string) reflect.Type {
	tb.Helper()
	f, ok := t.FieldByName(name)
	if !ok {
		tb.Fatalf("%v has no field %s", t, name)
	}
	return f.Type
}

// oaJSONFields returns the JSON names of t's fields.
func oaJSONFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-" || !f.IsExported():
		case f.Anonymous && tag == "":
			names = append(names, oaJSONFields(f.Type)...)
		case tag != "":
			names = append(names, tag)
		default:
			names = append(names, f.Name)
		}
	}
	return names
}

// oaResolve follows a local reference such as #/components/schemas/Error.
func oaResolve(doc map[string]any, ref string) any {
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

// oaDeref returns v, or what it refers to when it is a {$ref: ...}.
func oaDeref(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return v
	}
	target := oaResolve(doc, ref)
	if target == nil {
		t.Fatalf("$ref %s does not resolve", ref)
	}
	return target
}

func oaMap(t *testing.T, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: want a mapping, got %T", what, v)
	}
	return m
}

func oaList(v any) []any {
	l, _ := v.([]any)
	return l
}
