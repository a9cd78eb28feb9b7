package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/jobs"
)

// TestBatchCLI runs `sloproxy batch` against a served noop model (a real
// process) with a relative input path, then lists, shows and cancels the
// job with `sloproxy jobs`.
func TestBatchCLI(t *testing.T) {
	noop := testutil.BuildGo(t, "./examples/noop")
	s := startServe(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: echo, input_type: string, slo: 5s, default_output: '"late"', models: [noop]}
models:
  - {name: noop, version: "1", input_type: string, command: [%q, --input-type, string]}
`, testutil.FreePort(t), noop))
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("in.jsonl", []byte("\"a\"\n[1]\n\"c\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envAdminURL, "http://"+s.admin)
	t.Setenv(envAdminToken, "t")
	var out, errOut bytes.Buffer
	if code := run([]string{"batch", "--app", "echo", "--in", "in.jsonl", "--out", "out.jsonl"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"state     done", "3/3 lines (100.0%), 2 written, 1 errors", filepath.Join(dir, "out.jsonl.errors")} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("batch printed:\n%s\nwant %q", out.String(), want)
		}
	}
	if !strings.Contains(errOut.String(), "job j") || strings.Contains(errOut.String(), "\r") {
		t.Errorf("progress for a non-terminal: %q, want the job's id and lines without \\r", errOut.String())
	}
	if got, _ := os.ReadFile("out.jsonl"); string(got) != `{"line":1,"output":"a"}`+"\n"+`{"line":3,"output":"c"}`+"\n" {
		t.Errorf("output:\n%s", got)
	}
	if got, _ := os.ReadFile("out.jsonl.errors"); !strings.HasPrefix(string(got), `{"line":2,"error":"bad input: input must be a JSON string for a string app"`) {
		t.Errorf("errors:\n%s", got)
	}

	out.Reset()
	if code := run([]string{"jobs", "list", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("jobs list: exit %d: %s", code, errOut.String())
	}
	var list struct{ Jobs []jobs.Job }
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].State != jobs.Done {
		t.Fatalf("jobs list: %v %s", err, out.String())
	}
	id := list.Jobs[0].ID
	for _, verb := range []string{"get", "cancel"} {
		out.Reset()
		if code := run([]string{"jobs", verb, id}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "state     done") {
			t.Errorf("jobs %s: exit %d: %s%s", verb, code, out.String(), errOut.String())
		}
	}

	// A detached job on an input that does not exist is refused, naming it.
	errOut.Reset()
	if code := run([]string{"batch", "--detach", "--app", "echo", "--in", "missing.jsonl", "--out", "o.jsonl"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "missing.jsonl") {
		t.Errorf("a missing input: exit %d: %s", code, errOut.String())
	}
}
