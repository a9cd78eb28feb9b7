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

// TestOpenAPIQueryDocumentsEveryRoute checks that the document lists
// exactly the (method, path) pairs the router serves.
func TestOpenAPIQueryDocumentsEveryRoute(t *testing.T) {
	doc := loadQueryOpenAPI(t)
	served := servedEndpoints(t)
	if len(served) < 12 {
		t.Fatalf("found only %d routes: %v", len(served), served)
	}
	documented := testutil.DocumentedEndpoints(t, testutil.Map(t, doc["paths"], "paths"))
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
	paths := testutil.Map(t, doc["paths"], "paths")
	ids := map[string]endpoint{}
	for _, e := range testutil.DocumentedEndpoints(t, paths) {
		t.Run(e.String(), func(t *testing.T) {
			item := testutil.Map(t, paths[e.Path], e.Path)
			op := testutil.Map(t, item[strings.ToLower(e.Method)], e.String())

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
					pm := testutil.Map(t, oaDeref(t, doc, p), "parameter")
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

			responses := testutil.Map(t, op["responses"], "responses")
			codes := slices.Sorted(maps.Keys(responses))
			if !slices.ContainsFunc(codes, func(s string) bool { return strings.HasPrefix(s, "2") }) {
				t.Errorf("no 2xx response documented")
			}
			for _, code := range codes {
				if strings.HasPrefix(code, "2") {
					continue
				}
				// 499 is nginx's "client closed request", which a
				// half-closed client reads; net/http has no text for it.
				if n, err := strconv.Atoi(code); err != nil || http.StatusText(n) == "" && n != 499 {
					t.Errorf("response %s is not an HTTP status", code)
				}
				resp := testutil.Map(t, oaDeref(t, doc, responses[code]), code)
				media := testutil.Map(t, testutil.Map(t, resp["content"], code+" content")["application/json"], code+" application/json")
				if ref, _ := testutil.Map(t, media["schema"], code+" schema")["$ref"].(string); ref != "#/components/schemas/Error" {
					t.Errorf("response %s: schema %v; want the Error schema", code, media["schema"])
				}
			}
		})
	}
}

// TestOpenAPIQueryRefsResolve checks that every $ref points into the
// document.
func TestOpenAPIQueryRefsResolve(t *testing.T) { testutil.CheckOpenAPIRefs(t, loadQueryOpenAPI(t)) }

// TestOpenAPIQuerySchemasMatchTypes checks that the request schemas list
// exactly the JSON fields of the Go types the handlers decode them into.
// (The answers are written by hand, field by field; the handlers' tests
// check those.)
func TestOpenAPIQuerySchemasMatchTypes(t *testing.T) {
	doc := loadQueryOpenAPI(t)
	cases := []struct {
		schema string
		typ    reflect.Type
	}{
		{"PredictRequest", reflect.TypeFor[predictRequest]()},
		{"FeedbackRequest", reflect.TypeFor[feedbackRequest]()},
		{"InferenceRequest", reflect.TypeFor[oipInferRequest]()},
		{"RequestTensor", reflect.TypeFor[oipTensor]()},
		{"RequestedOutput", oaField(t, reflect.TypeFor[oipInferRequest](), "Outputs").Elem()},
		{"TensorMetadata", reflect.TypeFor[TensorMetadata]()},
	}
	for _, c := range cases {
		t.Run(c.schema, func(t *testing.T) { testutil.CheckSchemaFields(t, doc, c.schema, c.typ) })
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
	target := testutil.OpenAPIResolve(doc, ref)
	if target == nil {
		t.Fatalf("$ref %s does not resolve", ref)
	}
	return target
}

func oaList(v any) []any {
	l, _ := v.([]any)
	return l
}
