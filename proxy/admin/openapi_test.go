package admin

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/selection"
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
	paths := testutil.Map(t, doc["paths"], "paths")
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
			op, ok := testutil.Map(t, item, r.Path)[strings.ToLower(r.Method)]
			if !ok {
				t.Fatalf("%s %s is not in %s", r.Method, r.Path, "docs/openapi-admin.yaml")
			}
			opm := testutil.Map(t, op, r.Method+" "+r.Path)
			responses := testutil.Map(t, opm["responses"], "responses")
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
	for _, e := range testutil.DocumentedEndpoints(t, paths) {
		if !slices.Contains(routes, e) {
			t.Errorf("%v is documented but not routed", e)
		}
	}
}

// TestOpenAPIRefsResolve checks that every $ref points into the document.
func TestOpenAPIRefsResolve(t *testing.T) { testutil.CheckOpenAPIRefs(t, loadOpenAPI(t)) }

// TestOpenAPISchemasMatchTypes checks that each schema lists exactly the
// JSON fields of the Go type the API encodes or decodes for it.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
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
		{"LinkRequest", LinkRequest{}},
		{"ProfileRequest", ProfileRequest{}},
		{"ProfileView", ProfileView{}},
		{"ProfileFit", ProfileFit{}},
		{"ReplicasRequest", ReplicasRequest{}},
		{"PurgeRequest", PurgeRequest{}},
		{"Health", Health{}},
		{"SelectionStatus", selection.Status{}},
		{"FeaturesView", FeaturesView{}},
		{"Error", ErrorBody{}},
		{"JobSpec", jobs.Spec{}},
		{"Job", jobs.Job{}},
		{"JobList", JobList{}},
	}
	for _, c := range cases {
		t.Run(c.schema, func(t *testing.T) { testutil.CheckSchemaFields(t, doc, c.schema, reflect.TypeOf(c.typ)) })
	}
}

// TestOpenAPIProfileSchemas checks the schemas of the profile and of the
// features spec against the fields state.Profile, state.ProfileLine and
// features.Spec write, which their own MarshalJSON names (in
// milliseconds), not their Go fields' tags.
func TestOpenAPIProfileSchemas(t *testing.T) {
	doc := loadOpenAPI(t)
	p := state.Profile{ItemErrors: 1, Lines: []state.ProfileLine{{Batch: 1}}}
	spec := features.Spec{Key: "u:{id}", Fields: []features.Field{{Name: "a"}}, Missing: features.NotFound, Into: features.Prepend, Input: "x", Timeout: time.Millisecond, Redis: "h:1"}
	for schema, v := range map[string]any{"Profile": p, "ProfileLine": p.Lines[0], "FeaturesSpec": spec} {
		b, err := json.Marshal(v)
		must(t, err)
		var fields map[string]any
		must(t, json.Unmarshal(b, &fields))
		props := testutil.OpenAPIResolve(doc, "#/components/schemas/"+schema).(map[string]any)["properties"].(map[string]any)
		if got, want := slices.Sorted(maps.Keys(props)), slices.Sorted(maps.Keys(fields)); !slices.Equal(got, want) {
			t.Errorf("%s: properties %v; the JSON has %v", schema, got, want)
		}
	}
}
