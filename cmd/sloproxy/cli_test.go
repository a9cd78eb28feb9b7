package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/state"
)

// TestHelp: every way of asking for help prints a usage text and exits 0;
// no usage text, asked for or printed after a bad command line, shows the
// admin token drawn from the environment.
func TestHelp(t *testing.T) {
	const secret = "do-not-print-me-7f3a"
	t.Setenv(envAdminToken, secret)
	tests := []struct {
		args   []string
		status int
		want   string // in stdout or stderr
	}{
		{[]string{"--help"}, 0, "usage: sloproxy <command>"},
		{[]string{"-h"}, 0, "usage: sloproxy <command>"},
		{[]string{"help"}, 0, "usage: sloproxy <command>"},
		{[]string{"help", "bench"}, 0, "usage: sloproxy bench"},
		{[]string{"help", "apps"}, 0, "usage: sloproxy apps"},
		{[]string{"help", "nope"}, 2, `unknown command "nope"`},
		{[]string{"serve", "--help"}, 0, "usage: sloproxy serve --config FILE"},
		{[]string{"bench", "--help"}, 0, "--no-cache"},
		{[]string{"apps", "--help"}, 0, "usage: sloproxy apps"},
		{[]string{"apps", "create", "--help"}, 0, "-slo duration"},
		{[]string{"models", "-h"}, 0, "usage: sloproxy models"},
		{[]string{"models", "deploy", "-h"}, 0, "-wait duration"},
		{[]string{"models", "scale", "--help"}, 0, "-token token"},
		{[]string{}, 2, "usage: sloproxy <command>"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"apps", "create", "--name", "a", "--input-type", "string", "--slo", "50"}, 1, "50: missing unit, e.g. 50ms"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		status := run(tt.args, &out, &errOut)
		all := out.String() + errOut.String()
		if status != tt.status || !strings.Contains(all, tt.want) {
			t.Errorf("sloproxy %q: status %d, want %d with %q in:\n%s", tt.args, status, tt.status, tt.want, all)
		}
		if strings.Contains(all, secret) {
			t.Errorf("sloproxy %q printed the admin token:\n%s", tt.args, all)
		}
	}
}

// TestDurationFlags: a duration without a unit, on any subcommand, says
// what is missing.
func TestDurationFlags(t *testing.T) {
	t.Setenv(envAdminToken, "")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"apps", "create", "--name", "a", "--input-type", "string", "--slo", "50"}, "50: missing unit, e.g. 50ms"},
		{[]string{"apps", "create", "--name", "a", "--input-type", "string", "--slo", "50ms", "--cache-ttl", "0.5"}, "0.5: missing unit, e.g. 0.5ms"},
		{[]string{"apps", "create", "--name", "a", "--input-type", "string", "--slo", "fast"}, "fast: not a duration; want a number and a unit, e.g. 50ms"},
		{[]string{"models", "deploy", "--wait", "300"}, "300: missing unit, e.g. 300ms"},
		{[]string{"bench", "--url", "http://h/x", "--slo", "20"}, "20: missing unit, e.g. 20ms"},
		{[]string{"bench", "--url", "http://h/x", "--slo", "20ms", "--rate", "1", "--duration", "10"}, "10: missing unit, e.g. 10ms"},
		{[]string{"bench", "--url", "http://h/x", "--slo", "20ms", "--timeout", "1"}, "1: missing unit, e.g. 1ms"},
		{[]string{"bench", "--url", "http://h/x", "--slo", "20ms", "--warmup", "2"}, "2: missing unit, e.g. 2ms"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if status := run(tt.args, &out, &errOut); status == 0 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("sloproxy %q: status %d, want an error with %q in:\n%s", tt.args, status, tt.want, errOut.String())
		}
	}
	// A duration with a unit still parses.
	var d durationFlag
	if err := d.Set("1.5s"); err != nil || d.String() != "1.5s" {
		t.Errorf("1.5s: %v, %v", err, d.String())
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 replicas", 1: "1 replica", 2: "2 replicas"} {
		if got := plural(n, "replica"); got != want {
			t.Errorf("plural(%d): %q, want %q", n, got, want)
		}
	}
}

// TestConflictHints: each 409 the CLI can meet names the CLI command or
// flag that gets past it, not the REST path behind it.
func TestConflictHints(t *testing.T) {
	srv, _ := startAdmin(t)
	global := []string{"--admin", srv.URL, "--token", cliTestToken}
	setup := [][]string{
		{"apps", "create", "--name", "spam", "--input-type", "string", "--slo", "50ms"},
		{"models", "register", "--name", "m", "--version", "1", "--input-type", "string", "--runtime", "external", "--address", "127.0.0.1:1"},
		{"models", "register", "--name", "img", "--version", "1", "--input-type", "bytes", "--runtime", "external", "--address", "127.0.0.1:1"},
		{"models", "rollback", "m", "1"},
		{"apps", "link", "spam", "m"},
	}
	for _, args := range setup {
		if _, errOut, err := runCLI(args[0], append(args[1:], global...)...); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, errOut)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"apps", "create", "--name", "spam", "--input-type", "string", "--slo", "50ms"}, "pass --replace to replace it"},
		{[]string{"apps", "create", "--name", "spam", "--input-type", "bytes", "--slo", "50ms", "--replace"}, "sloproxy apps unlink APP MODEL"},
		{[]string{"models", "register", "--name", "m", "--version", "1", "--input-type", "string", "--runtime", "external", "--address", "127.0.0.1:2"},
			"register another --version, or change the replica count with `sloproxy models scale m 1 N`"},
		{[]string{"models", "delete-version", "m", "1"}, "`sloproxy models rollback m VERSION`"},
		{[]string{"apps", "link", "spam", "img"}, "`sloproxy models get img` shows its input type"},
	}
	for _, tt := range tests {
		_, _, err := runCLI(tt.args[0], append(tt.args[1:], global...)...)
		if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "/api/") {
			t.Errorf("%q: %v, want a 409 with %q and no REST path", tt.args, err, tt.want)
		}
	}
}

func TestParseInputs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []state.InputPart
		err  string
	}{
		{"dense:4", []state.InputPart{{Name: "dense", Size: 4}}, ""},
		{"dense:4, user : 2", []state.InputPart{{Name: "dense", Size: 4}, {Name: "user", Size: 2}}, ""},
		{"in:1:2", []state.InputPart{{Name: "in:1", Size: 2}}, ""},
		{"dense", nil, `"dense": write each part as name:size`},
		{"dense:four", nil, `"dense:four": write each part as name:size`},
		{"dense:4,", nil, `"": write each part as name:size`},
	} {
		got, err := parseInputs(tc.in)
		if !reflect.DeepEqual(got, tc.want) || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseInputs(%q) = %+v, %v; want %+v, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}
