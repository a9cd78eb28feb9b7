// Package docs holds the project's documentation; its test runs the shell
// snippets of README.md and docs/http.md against a real proxy, so that a
// page that drifts from the code fails the tests.
package docs

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// The snippets' conventions, which the pages follow:
//
//   - A ```sh block is run, one command at a time (a line ending in \
//     continues), in one bash session per page section, in the repository's
//     root, unless the line before its fence is <!-- not run: why -->.
//   - Comment lines right after a command (no blank line between) are its
//     expected output, "# " removed; other comment lines are prose. A
//     command with expected output must print exactly those lines; one
//     without must exit 0.
//   - In an expected line, "..." matches any text, and a line that is only
//     "..." matches any number of lines. A line of JSON matches an output
//     line of JSON with the same fields and values, except the fields whose
//     values vary from run to run (query_id, latency_ms), which need only
//     be present.
//   - A command holding "=..." (such as export SLOPROXY_ADMIN_TOKEN=...)
//     asks the reader for a value: the test supplies it in the environment
//     instead of running the command.

// block is one ```sh block of a page.
type block struct {
	file, section string
	line          int
	skip          string // why it is not run, from <!-- not run: ... -->
	commands      []command
}

// command is one command of a block and the output the page shows for it.
type command struct {
	line     int
	text     string
	expected []string // nil: not shown
}

// readBlocks returns the ```sh blocks of the markdown file at path, with
// the "## " section each is in.
func readBlocks(t *testing.T, path string) []block {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	var cur *block
	section, skip := "", ""
	lines := strings.Split(string(raw), "\n")
	for i, l := range lines {
		switch {
		case cur != nil && strings.HasPrefix(l, "```"):
			cur.commands = parseCommands(lines[cur.line:i], cur.line+1)
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
		case strings.HasPrefix(l, "## "):
			section = strings.TrimPrefix(l, "## ")
		case strings.HasPrefix(l, "```sh"):
			cur = &block{file: filepath.Base(path), section: section, line: i + 1, skip: skip}
		case strings.HasPrefix(l, "<!-- not run:"):
			skip = strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(l, "<!-- not run:")), "-->")
			continue
		}
		if strings.TrimSpace(l) != "" {
			skip = ""
		}
	}
	return blocks
}

// parseCommands splits a block's lines (the first being line first of the
// file) into commands and their expected output.
func parseCommands(lines []string, first int) []command {
	var cmds []command
	var cont *command // a command whose last line ended in \
	prose := true     // a comment line here is prose, not output
	for i, l := range lines {
		switch {
		case cont != nil:
			cont.text += "\n" + l
			if !strings.HasSuffix(l, `\`) {
				cont = nil
			}
		case strings.TrimSpace(l) == "":
			prose = true
		case strings.HasPrefix(l, "#"):
			if !prose && len(cmds) > 0 {
				c := &cmds[len(cmds)-1]
				c.expected = append(c.expected, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
			}
		default:
			cmds = append(cmds, command{line: first + i, text: l})
			prose = false
			if strings.HasSuffix(l, `\`) {
				cont = &cmds[len(cmds)-1]
			}
		}
	}
	return cmds
}

// volatile are the JSON fields whose values differ from run to run.
var volatile = map[string]bool{"query_id": true, "latency_ms": true}

// matchLine reports whether an output line matches an expected one.
func matchLine(want, got string) bool {
	want, got = strings.TrimRight(want, " \r"), strings.TrimRight(got, " \r")
	var w, g any
	if json.Unmarshal([]byte(want), &w) == nil && json.Unmarshal([]byte(got), &g) == nil {
		if _, ok := w.(map[string]any); ok {
			return matchJSON(w, g)
		}
	}
	parts := strings.Split(want, "...")
	if len(parts) == 1 {
		return want == got
	}
	if !strings.HasPrefix(got, parts[0]) {
		return false
	}
	rest := got[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}

func matchJSON(want, got any) bool {
	if wa, ok := want.([]any); ok {
		ga, ok := got.([]any)
		if !ok || len(wa) != len(ga) {
			return false
		}
		for i := range wa {
			if !matchJSON(wa[i], ga[i]) {
				return false
			}
		}
		return true
	}
	w, wok := want.(map[string]any)
	g, gok := got.(map[string]any)
	if !wok || !gok {
		return reflect.DeepEqual(want, got)
	}
	if len(w) != len(g) {
		return false
	}
	for k, wv := range w {
		gv, ok := g[k]
		if !ok || (!volatile[k] && !matchJSON(wv, gv)) {
			return false
		}
	}
	return true
}

// matchOutput reports whether output lines match the expected ones, where
// an expected line "..." matches any number of lines.
func matchOutput(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if strings.TrimSpace(want[0]) == "..." {
		for i := 0; i <= len(got); i++ {
			if matchOutput(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && matchLine(want[0], got[0]) && matchOutput(want[1:], got[1:])
}

// shell is one bash session: variables, exports and the directory carry
// from one command to the next, as in a reader's terminal.
type shell struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *testutil.Buffer
	subs   *strings.Replacer
	n      int
}

// newShell starts bash in dir with env added to the environment. subs
// rewrites each command (and its expected output) before it runs: the
// test's own addresses for the pages' defaults.
func newShell(t *testing.T, dir string, env []string, subs *strings.Replacer) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--norc", "--noprofile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &shell{t: t, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), stderr: &testutil.Buffer{}, subs: subs}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Logf("bash: %v", err)
		}
	})
	return s
}

// run runs c and checks its output, failing the test on a mismatch.
func (s *shell) run(b block, c command) {
	s.t.Helper()
	where := fmt.Sprintf("%s:%d (%s)", b.file, c.line, b.section)
	if strings.Contains(c.text, "=...") {
		s.t.Logf("%s: left to the reader, supplied by the test: %s", where, c.text)
		return
	}
	s.n++
	end := fmt.Sprintf("__snippet_done_%d", s.n)
	text := s.subs.Replace(c.text)
	if _, err := fmt.Fprintf(s.stdin, "%s\necho; echo %s $?\n", text, end); err != nil {
		s.t.Fatalf("%s: writing to bash: %v", where, err)
	}
	type result struct {
		lines  []string
		status string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			l, err := s.out.ReadString('\n')
			if err != nil {
				r.err = err
				done <- r
				return
			}
			l = strings.TrimSuffix(l, "\n")
			if status, ok := strings.CutPrefix(l, end+" "); ok {
				r.status = status
				// The echo before the marker ends a last line without a newline.
				if n := len(r.lines); n > 0 && r.lines[n-1] == "" {
					r.lines = r.lines[:n-1]
				}
				done <- r
				return
			}
			r.lines = append(r.lines, l)
		}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(3 * time.Minute):
		_ = s.cmd.Process.Kill()
		s.t.Fatalf("%s: %s\ndid not finish within 3 minutes; bash's stderr:\n%s", where, text, s.stderr)
	}
	if r.err != nil {
		s.t.Fatalf("%s: %s\nbash ended: %v; its stderr:\n%s", where, text, r.err, s.stderr)
	}
	s.t.Logf("%s: $ %s\n%s", where, text, strings.Join(r.lines, "\n"))
	if c.expected == nil {
		if r.status != "0" {
			s.t.Errorf("%s: %s\nexited %s; bash's stderr:\n%s", where, text, r.status, s.stderr)
		}
		return
	}
	want := make([]string, len(c.expected))
	for i, e := range c.expected {
		want[i] = s.subs.Replace(e)
	}
	if !matchOutput(want, r.lines) {
		s.t.Errorf("%s: %s\nprinted:\n%s\nthe page shows:\n%s\nbash's stderr:\n%s", where, text,
			strings.Join(r.lines, "\n"), strings.Join(want, "\n"), s.stderr)
	}
}

// runSection runs the blocks of section, in order, and returns how many
// it ran.
func runSection(t *testing.T, s *shell, blocks []block, section string) int {
	t.Helper()
	ran := 0
	for _, b := range blocks {
		if b.section != section {
			continue
		}
		if b.skip != "" {
			t.Logf("%s:%d (%s): not run: %s", b.file, b.line, b.section, b.skip)
			continue
		}
		for _, c := range b.commands {
			s.run(b, c)
		}
		ran++
	}
	return ran
}

// sections returns the sections of blocks, in order of appearance.
func sections(blocks []block) []string {
	var out []string
	for _, b := range blocks {
		if len(out) == 0 || out[len(out)-1] != b.section {
			out = append(out, b.section)
		}
	}
	return out
}

// binDir returns a directory holding the sloproxy binary, for PATH.
func binDir(t *testing.T) string {
	return filepath.Dir(testutil.BuildGo(t, "./cmd/sloproxy"))
}

// TestQuickstartSnippets runs the README's "Try it" section and every
// section of docs/http.md against the quickstart's configuration, served by
// the real binary with its real model processes. The addresses become the
// test's own, and `go run ./cmd/sloproxy` the built binary.
func TestQuickstartSnippets(t *testing.T) {
	testutil.RequirePython(t, "sklearn", "joblib")
	root := testutil.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "examples", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	query, admin := testutil.FreeAddr(t), testutil.FreeAddr(t)
	yaml := string(raw)
	for old, new := range map[string]string{
		"127.0.0.1:1337":    query,
		"127.0.0.1:1338":    admin,
		"[go, run, ./noop,": "[" + testutil.BuildGo(t, "./examples/noop") + ",",
		"sklearn/":          filepath.Join(root, "examples", "sklearn") + "/",
	} {
		if !strings.Contains(yaml, old) {
			t.Fatalf("examples/quickstart.yaml no longer holds %q; update this test", old)
		}
		yaml = strings.ReplaceAll(yaml, old, new)
	}
	yaml += fmt.Sprintf("\nruntimes: {process: {enabled: true, port_base: %d}}\n", testutil.FreePort(t))
	const token = "snippets-token"
	t.Setenv("SLOPROXY_ADMIN_TOKEN", token)
	p := testutil.StartProxy(t, yaml)
	subs := strings.NewReplacer("127.0.0.1:1337", p.Query, "127.0.0.1:1338", p.Admin, "go run ./cmd/sloproxy ", "sloproxy ")
	env := []string{"PATH=" + binDir(t) + string(os.PathListSeparator) + os.Getenv("PATH"), "SLOPROXY_ADMIN=http://" + p.Admin}
	waitAnswered(t, p.Query, "echo", `{"input": "warm-up"}`)
	waitAnswered(t, p.Query, "digits", `{"input": [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}`)

	readme := readBlocks(t, filepath.Join(root, "README.md"))
	if runSection(t, newShell(t, root, env, subs), readme, "Try it") == 0 {
		t.Fatal(`README.md has no block to run in section "Try it"`)
	}
	httpDoc := readBlocks(t, filepath.Join(root, "docs", "http.md"))
	s, ran := newShell(t, root, env, subs), 0
	for _, sec := range sections(httpDoc) {
		ran += runSection(t, s, httpDoc, sec)
	}
	if ran == 0 {
		t.Fatal("docs/http.md has no block to run")
	}
}

// TestDockerSnippets follows the README's Docker section literally on the
// real Docker Engine: build, deploy, link, query, kill a container, scale,
// deploy a second version and roll back. Its proxy is the real binary on
// examples/docker.yaml, with the test's addresses and its own container
// owner, whose containers it removes at the end.
func TestDockerSnippets(t *testing.T) {
	cli := testutil.RequireDocker(t)
	root := testutil.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "examples", "docker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	query, admin := testutil.FreeAddr(t), testutil.FreeAddr(t)
	owner := testutil.UniqueName("snippets")
	yaml := strings.NewReplacer("127.0.0.1:1337", query, "127.0.0.1:1338", admin,
		"    enabled: true", "    enabled: true\n    owner: "+owner).Replace(string(raw))
	t.Cleanup(func() { testutil.RemoveContainers(t, cli, "io.sloproxy.owner", owner) })
	t.Setenv("SLOPROXY_ADMIN_TOKEN", "secret")
	p := testutil.StartProxy(t, yaml)
	subs := strings.NewReplacer("127.0.0.1:1337", p.Query, "127.0.0.1:1338", p.Admin)
	// The section builds bin/sloproxy and puts it on PATH itself.
	env := []string{"SLOPROXY_ADMIN=http://" + p.Admin}
	if runSection(t, newShell(t, root, env, subs), readBlocks(t, filepath.Join(root, "README.md")), "Docker") == 0 {
		t.Fatal(`README.md has no block to run in section "Docker"`)
	}
}

// waitAnswered waits until app's model, not its default output, answers
// body: the model processes compile or load first.
func waitAnswered(t *testing.T, addr, app, body string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command("curl", "-s", "-d", body, "http://"+addr+"/apps/"+app+"/predict").Output()
		if err == nil && strings.Contains(string(out), `"default":false`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("app %s not answered by its model within 2 minutes: %s %v", app, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		want, got []string
		match     bool
	}{
		{[]string{`{"query_id":"a-1","output":"hi","default":false,"latency_ms":0.3}`},
			[]string{`{"query_id":"b-7","output":"hi","default":false,"latency_ms":12}`}, true},
		{[]string{`{"query_id":"a-1","output":"hi","default":false,"latency_ms":0.3}`},
			[]string{`{"query_id":"b-7","output":"ho","default":false,"latency_ms":12}`}, false},
		{[]string{`{"query_id":"a-1","output":"hi"}`}, []string{`{"output":"hi"}`}, false},
		{[]string{`{"batch_predictions":[{"query_id":"a","output":"a"}]}`}, []string{`{"batch_predictions":[{"query_id":"b","output":"a"}]}`}, true},
		{[]string{"x", "...", "z"}, []string{"x", "z"}, true},
		{[]string{"x", "...", "z"}, []string{"x", "y1", "y2", "z"}, true},
		{[]string{"x", "...", "z"}, []string{"x", "y"}, false},
		{[]string{"...-greeter-1-... Up ..."}, []string{"o-greeter-1-0-ab Up 2 seconds"}, true},
		{[]string{"model m: current version 1"}, []string{"model m: current version 2"}, false},
		{[]string{"200"}, []string{"200", "extra"}, false},
	}
	for _, tt := range tests {
		if got := matchOutput(tt.want, tt.got); got != tt.match {
			t.Errorf("match(%q, %q) = %v, want %v", tt.want, tt.got, got, tt.match)
		}
	}
}
