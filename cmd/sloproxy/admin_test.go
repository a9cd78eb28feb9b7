package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

const cliTestToken = "cli-test-token"

// startAdmin serves a real admin API over a fresh in-memory Store, and
// clears the environment variables that would change the CLI's defaults.
func startAdmin(t *testing.T) (*httptest.Server, *state.Store) {
	t.Helper()
	t.Setenv(envAdminURL, "")
	t.Setenv(envAdminToken, "")
	lookups := features.NewTable(features.Options{})
	t.Cleanup(func() { lookups.Close() })
	store := state.NewStore(nil, state.Options{CheckApp: lookups.CheckApp}) // as serve wires it
	// The proxy's own view of the selection, without a query path.
	policies := selection.NewTable(selection.Options{})
	status := func(ctx context.Context, name string) (selection.Status, error) {
		snap := store.Snapshot()
		a, ok := snap.App(name)
		if !ok {
			return selection.Status{}, fmt.Errorf("%w: no app named %q", state.ErrNotFound, name)
		}
		return policies.Status(ctx, a.Name, a.Policy, a.Selection, snap.ModelsOf(name)), nil
	}
	srv := httptest.NewServer(admin.NewHandler(store, admin.Options{Token: cliTestToken, Selection: status, Features: lookups, MaxReplicas: 32}))
	t.Cleanup(srv.Close)
	return srv, store
}

// runCLI runs `sloproxy GROUP ARGS...` and returns what it printed.
func runCLI(group string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	run := runApps
	if group == "models" {
		run = runModels
	}
	err = run(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestAdminCLI runs the apps and models subcommands in sequence against a
// real admin API, each step building on the state the previous ones left.
func TestAdminCLI(t *testing.T) {
	srv, store := startAdmin(t)
	global := []string{"--admin", srv.URL, "--token", cliTestToken}
	steps := []struct {
		group   string
		args    []string
		wantOut []string // substrings of stdout
		wantErr string   // a substring of the error; empty means none
	}{
		{"apps", []string{"list"}, []string{"NAME", "INPUT", "SLO"}, ""},
		{"apps", []string{"create", "--name", "digits", "--input-type", "float32", "--slo", "50ms", "--default-output", "-1", "--priority", "2"},
			[]string{"name:", "digits", "slo:", "50ms", `default output:  "-1"`, "priority:", "2"}, ""},
		{"apps", []string{"create", "--name", "digits", "--input-type", "float32", "--slo", "50ms"}, nil, `409 Conflict: conflict: app "digits": already exists`},
		{"apps", []string{"create", "--replace", "--name", "digits", "--input-type", "float32", "--slo", "40ms", "--default-output", "-1"}, []string{"40ms"}, ""},
		{"apps", []string{"create", "--name", "spam", "--input-type", "string", "--slo", "1.5ms", "--policy", "exp3", "--cache-ttl", "90s"}, []string{"1.5ms", "exp3", "TTL 1m30s"}, ""},
		{"apps", []string{"create", "--name", "fresh", "--input-type", "string", "--slo", "5ms", "--no-cache"}, []string{"cache:", "off"}, ""},
		{"apps", []string{"delete", "fresh"}, nil, ""},
		{"apps", []string{"list"}, []string{"digits  float32  40ms", "spam    string   1.5ms  exp3"}, ""},

		{"models", []string{"register", "--name", "mnist", "--version", "1", "--input-type", "float32", "--cmd", "/bin/mnist --version 1", "--env", "OMP_NUM_THREADS=1", "--batch-size", "16"},
			[]string{"registered model mnist version 1"}, ""},
		{"models", []string{"register", "--name", "mnist", "--version", "2", "--input-type", "float32", "--runtime", "process", "--command", "/bin/mnist", "--command", "--version=2", "--replicas", "2", "--label", "framework=onnx"},
			[]string{"registered model mnist version 2", "the current version is still 1", "sloproxy models rollback mnist 2"}, ""},
		{"models", []string{"register", "--name", "echo", "--version", "a", "--input-type", "string", "--runtime", "external", "--address", "127.0.0.1:7100", "--address", "127.0.0.1:7101"},
			[]string{"registered model echo version a"}, ""},
		{"models", []string{"register", "--name", "big", "--version", "1", "--input-type", "bytes", "--runtime", "docker", "--image", "big:1"},
			[]string{"registered model big version 1"}, ""},
		{"models", []string{"register", "--name", "bad", "--version", "1", "--input-type", "bytes", "--runtime", "external", "--image", "x", "--address", "h:1"},
			nil, "400 Bad Request: invalid: model \"bad\" version \"1\": runtime.image: not used by the external runtime"},

		{"apps", []string{"link", "digits", "mnist"}, []string{"app digits uses models: mnist"}, ""},
		{"apps", []string{"link", "spam", "mnist"}, nil, "409 Conflict"},
		{"apps", []string{"select", "digits", `{"policy": "weighted", "shares": {"mnist": 9, "mnist:2": 1}}`},
			[]string{"weighted (set by apps select)", `selection: {"policy":"weighted","shares":{"mnist":9,"mnist:2":1}}`}, ""},
		{"apps", []string{"list"}, []string{"weighted (set by apps select)"}, ""},
		{"apps", []string{"selection", "digits"}, []string{"policy: weighted", `spec: {"policy":"weighted","output":"label",`, "(from admin)",
			"share mnist: 0.900", "share mnist:2: 0.100"}, ""},
		{"apps", []string{"select", "digits", `{"policy": "weighted"}`}, nil, `400 Bad Request: app "digits": selection: weighted needs shares`},
		{"apps", []string{"select", "digits", `{"policy": `}, nil, "the spec is not JSON"},
		{"apps", []string{"select", "digits", "@/no/such/spec.json"}, nil, "reading the spec"},
		{"apps", []string{"clear-selection", "digits"}, []string{"policy: single (the first linked model)"}, ""},
		{"apps", []string{"selection", "digits"}, []string{"(from defaults)"}, ""},
		{"apps", []string{"set-features", "digits", `{"key": "user:{user_id}", "fields": [{"name": "clicks", "type": "int", "default": 0}], "timeout_ms": 5, "redis": "127.0.0.1:6390"}`},
			[]string{`features:        {"key":"user:{user_id}","fields":[{"name":"clicks","type":"int","default":0}],"redis":"127.0.0.1:6390","timeout_ms":5} (set by apps set-features)`}, ""},
		{"apps", []string{"features", "digits"}, []string{`"key":"user:{user_id}"`, "(from admin)"}, ""},
		{"apps", []string{"set-features", "digits", `{"key": "user", "fields": [{"name": "clicks", "default": 0}], "redis": "h:1"}`}, nil,
			`400 Bad Request: app "digits": features.key "user" names no request field`},
		{"apps", []string{"set-features", "digits", `{"key": `}, nil, "the spec is not JSON"},
		{"apps", []string{"clear-features", "digits"}, []string{"name:"}, ""},
		{"apps", []string{"features", "digits"}, nil, `404 Not Found: not found: app "digits" looks no features up`},
		{"apps", []string{"create", "--name", "ranker", "--input-type", "float32", "--slo", "50ms", "--inputs", "query:4, user:2"}, []string{"inputs:", "query:4,user:2"}, ""},
		{"apps", []string{"create", "--name", "ranker2", "--input-type", "float32", "--slo", "50ms", "--inputs", "query"}, nil, `"query": write each part as name:size`},
		{"apps", []string{"create", "--name", "ranker2", "--input-type", "float32", "--slo", "50ms", "--inputs", "query:0"}, nil, `inputs[0] "query": size 0`},
		{"apps", []string{"set-features", "ranker", `{"key": "user:{id}", "fields": [{"name": "a", "default": 0}, {"name": "b", "default": 0}], "input": "user", "redis": "h:1"}`},
			[]string{`"input":"user"`}, ""},
		{"apps", []string{"set-features", "ranker", `{"key": "user:{id}", "fields": [{"name": "a", "default": 0}], "input": "usr", "redis": "h:1"}`}, nil,
			`features.input "usr": app "ranker" has no such input; its inputs are query, user`},
		{"apps", []string{"create", "--replace", "--name", "ranker", "--input-type", "float32", "--slo", "50ms", "--inputs", "query:4"}, nil,
			`409 Conflict: conflict: app "ranker": the features spec set through the admin API does not fit its input`},
		{"apps", []string{"delete", "ranker"}, nil, ""},
		{"models", []string{"list"}, []string{"NAME", "mnist  1        float32  1,2       digits"}, ""},
		{"models", []string{"get", "mnist"}, []string{"current version:  1", "apps:             digits",
			"1        *        process   0/1", "16 - - - - /bin/mnist --version 1", "2                 process   0/2", "auto - - - - /bin/mnist --version=2"}, ""},
		{"models", []string{"get", "echo"}, []string{"127.0.0.1:7100,127.0.0.1:7101"}, ""},
		{"models", []string{"rollback", "mnist", "2"}, []string{"model mnist: current version 2"}, ""},
		{"models", []string{"scale", "mnist", "2", "3"}, []string{"model mnist version 2: 3 replicas wanted, 0 live"}, ""},
		{"models", []string{"scale", "mnist", "2", "0"}, nil, "replicas 0: must be at least 1"},
		{"models", []string{"scale", "mnist", "2", "1000000000"}, nil, `400 Bad Request: model "mnist" version "2": replicas 1000000000: above limits.max_replicas (32)`},
		{"models", []string{"scale", "mnist", "2", "three"}, nil, `replica count "three": not a number`},
		{"models", []string{"autoscale", "mnist", "2", "--max", "4", "--min", "2", "--target", "0.7", "--scale-down-delay", "30s"},
			[]string{"model mnist version 2: autoscaling 2-4 at 0.7, down after 30s; 3 replicas wanted"}, ""},
		{"models", []string{"get", "mnist"}, []string{"AUTOSCALE", "2-4 at 0.7, down after 30s"}, ""},
		{"models", []string{"autoscale", "mnist", "2", "--max", "1", "--min", "2"}, nil, `400 Bad Request: invalid: model "mnist" version "2": autoscale.max 1: must be at least autoscale.min (2)`},
		{"models", []string{"autoscale", "mnist", "2", "--max", "40"}, nil, `400 Bad Request: model "mnist" version "2": autoscale.max 40: above limits.max_replicas (32)`},
		{"models", []string{"autoscale", "mnist", "2", "--max", "4", "--target", "0"}, nil, "--target 0: must be in (0, 1]"},
		{"models", []string{"autoscale", "mnist", "2"}, nil, "--max: required (or --off)"},
		{"models", []string{"autoscale", "mnist", "2", "--off"}, []string{"model mnist version 2: autoscaling -; 3 replicas wanted"}, ""},
		{"models", []string{"delete-version", "mnist", "2"}, nil, "409 Conflict"},
		{"models", []string{"delete-version", "mnist", "1"}, []string{"deleted model mnist version 1"}, ""},
		{"apps", []string{"unlink", "digits", "mnist"}, []string{"app digits uses models: -"}, ""},
		{"apps", []string{"delete", "spam"}, []string{"deleted app spam"}, ""},

		// Errors the API answers.
		{"apps", []string{"get", "nope"}, nil, `404 Not Found: not found: app "nope"`},
		{"models", []string{"get", "nope"}, nil, `404 Not Found: not found: model "nope"`},
		{"models", []string{"rollback", "mnist", "9"}, nil, `404 Not Found`},
		{"apps", []string{"create", "--name", "x", "--input-type", "float16", "--slo", "1s"}, nil, `400 Bad Request: invalid: app "x": input_type "float16"`},

		// Errors the CLI finds.
		{"apps", []string{"create", "--name", "x", "--input-type", "bytes"}, nil, "--slo is required"},
		{"models", []string{"register", "--name", "m", "--input-type", "bytes"}, nil, "--version is required"},
		{"models", []string{"register", "--name", "m", "--version", "1", "--input-type", "bytes", "--cmd", "a", "--command", "b"}, nil, "--cmd and --command: give one"},
		{"apps", []string{"get"}, nil, "want 1 arguments (NAME), got 0"},
		{"apps", []string{"list", "extra"}, nil, "takes no arguments"},
		{"apps", []string{"frobnicate"}, nil, `unknown subcommand "frobnicate"`},
		{"apps", []string{"create", "--colour", "red"}, nil, "flag provided but not defined: -colour"},
	}
	for _, s := range steps {
		args := append(append([]string{}, global...), s.args...)
		out, _, err := runCLI(s.group, args...)
		name := s.group + " " + strings.Join(s.args, " ")
		switch {
		case s.wantErr == "" && err != nil:
			t.Fatalf("%s: %v", name, err)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Fatalf("%s: error %v; want one containing %q", name, err, s.wantErr)
		}
		for _, want := range s.wantOut {
			// Compared with runs of spaces as one: tabwriter pads.
			if !strings.Contains(squeeze(out), squeeze(want)) {
				t.Errorf("%s: output lacks %q:\n%s", name, want, out)
			}
		}
	}
	if v, _ := store.Snapshot().Version("mnist", "2"); v.Labels["framework"] != "onnx" || strings.Join(v.Runtime.Command, " ") != "/bin/mnist --version=2" {
		t.Errorf("mnist version 2 in the state: %+v", v)
	}
	if v, _ := store.Snapshot().Version("echo", "a"); len(v.Runtime.Addresses) != 2 {
		t.Errorf("echo version a in the state: %+v", v)
	}
}

// squeeze replaces each run of spaces and tabs in s with one space.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// TestAdminCLIAuth checks the token's sources and what a bad one prints.
func TestAdminCLIAuth(t *testing.T) {
	srv, _ := startAdmin(t)

	_, _, err := runCLI("apps", "--admin", srv.URL, "--token", "wrong", "list")
	if err == nil || !strings.Contains(err.Error(), "401 Unauthorized") || !strings.Contains(err.Error(), "invalid bearer token") {
		t.Errorf("wrong token: error %v; want 401 Unauthorized with the server's message", err)
	}
	_, _, err = runCLI("apps", "--admin", srv.URL, "list")
	if err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Errorf("no token: error %v; want one naming --token and $%s", err, envAdminToken)
	}

	// The environment supplies the defaults.
	t.Setenv(envAdminURL, srv.URL)
	t.Setenv(envAdminToken, cliTestToken)
	if _, _, err := runCLI("apps", "list"); err != nil {
		t.Errorf("with $%s and $%s: %v", envAdminURL, envAdminToken, err)
	}
	// A flag overrides the environment.
	if _, _, err := runCLI("apps", "list", "--token", "wrong"); admin.StatusCode(err) != 401 {
		t.Errorf("--token after the verb did not override $%s: %v", envAdminToken, err)
	}
}

// TestAdminCLIJSON checks that --json prints the API's JSON, wherever it
// appears on the command line.
func TestAdminCLIJSON(t *testing.T) {
	srv, _ := startAdmin(t)
	g := []string{"--admin", srv.URL, "--token", cliTestToken}
	if _, _, err := runCLI("apps", append(g, "create", "--name", "digits", "--input-type", "float32", "--slo", "50ms")...); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		append([]string{"--json"}, append(g, "get", "digits")...),
		append(g, "get", "digits", "--json"),
	} {
		out, _, err := runCLI("apps", args...)
		if err != nil {
			t.Fatal(err)
		}
		var v admin.AppView
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.Name != "digits" || v.SLOMillis != 50 || v.Models == nil {
			t.Errorf("apps %v: %v, %+v from:\n%s", args, err, v, out)
		}
	}
	out, _, err := runCLI("models", append(g, "list", "--json")...)
	if err != nil || strings.Join(strings.Fields(out), "") != `{"models":[]}` {
		t.Errorf("models list --json: %v, %s", err, out)
	}
}

// TestAdminCLIUsage checks that -h prints usage and is not an error, and
// that a missing subcommand is.
func TestAdminCLIUsage(t *testing.T) {
	startAdmin(t)
	_, stderr, err := runCLI("models", "register", "-h")
	if err != nil || !strings.Contains(stderr, "usage: sloproxy models register --name NAME") || !strings.Contains(stderr, "-replicas") {
		t.Errorf("models register -h: %v; stderr:\n%s", err, stderr)
	}
	_, stderr, err = runCLI("apps")
	if err == nil || !strings.Contains(stderr, "subcommands:") || !strings.Contains(stderr, "link APP MODEL") {
		t.Errorf("apps without a subcommand: %v; stderr:\n%s", err, stderr)
	}
	_, stderr, err = runCLI("apps", "-h")
	if err != nil || !strings.Contains(stderr, "--admin URL") {
		t.Errorf("apps -h: %v; stderr:\n%s", err, stderr)
	}
}

// TestAdminDefaultsAgree: the CLI's default admin URL reaches the address
// serve listens on by default. config keeps its own default (it imports
// nothing above it), so the two are checked here, where both are known.
func TestAdminDefaultsAgree(t *testing.T) {
	if want := "http://" + config.DefaultAdminListen; admin.DefaultURL != want {
		t.Errorf("admin.DefaultURL %q, want %q, where serve listens by default", admin.DefaultURL, want)
	}
	if admin.DefaultAddr != config.DefaultAdminListen {
		t.Errorf("admin.DefaultAddr %q, config.DefaultAdminListen %q: they must agree", admin.DefaultAddr, config.DefaultAdminListen)
	}
}

// TestReadinessNamesAgree: serve converts oip.readiness to proxy.Readiness
// as is, so config's spellings must be proxy's.
func TestReadinessNamesAgree(t *testing.T) {
	for c, p := range map[string]proxy.Readiness{config.ReadinessEveryApp: proxy.ReadyEveryApp, config.ReadinessAnyApp: proxy.ReadyAnyApp} {
		if proxy.Readiness(c) != p {
			t.Errorf("config's readiness %q is proxy's %q", c, p)
		}
	}
}
