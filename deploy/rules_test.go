package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

// promtool runs Debian's promtool with args in dir and returns its output
// and whether it succeeded.
func promtool(t *testing.T, dir string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(testutil.LookBinary(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// The example configuration and both rule files load, and the rule unit
// tests (rules_test.yml: a healthy app, a fast burn, a slow burn, a
// flapping replica, a failing reload and a cache without Redis) pass.
func TestPromtool(t *testing.T) {
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "rules.yml", "alerts.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		if out, ok := promtool(t, "prometheus", args...); !ok {
			t.Errorf("promtool %s failed:\n%s", strings.Join(args, " "), out)
		}
	}
	// docker-compose.yml's configuration, with the rule files mounted
	// beside it as Compose mounts them.
	dir := t.TempDir()
	for src, dst := range map[string]string{
		"../examples/compose/prometheus.yml": "prometheus.yml",
		"prometheus/rules.yml":               "rules.yml",
		"prometheus/alerts.yml":              "alerts.yml",
	} {
		if err := os.WriteFile(filepath.Join(dir, dst), readFile(t, src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, ok := promtool(t, dir, "check", "config", "prometheus.yml"); !ok {
		t.Errorf("promtool check config examples/compose/prometheus.yml failed:\n%s", out)
	}
}

// The checks have teeth: a copy of the rules with an expression that does
// not parse fails `promtool check rules`, and one whose page threshold
// drifted fails `promtool test rules`.
func TestPromtoolCatchesBrokenRules(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		args           []string
		want           string // in promtool's output
	}{
		{"expression does not parse", "app:sloproxy_slo_burn_rate:ratio_rate5m > 14.4", "app:sloproxy_slo_burn_rate:ratio_rate5m > > 14.4",
			[]string{"check", "rules", "rules.yml", "alerts.yml"}, "parse error"},
		{"page threshold drifted", "app:sloproxy_slo_burn_rate:ratio_rate1h > 14.4", "app:sloproxy_slo_burn_rate:ratio_rate1h > 144",
			[]string{"test", "rules", "rules_test.yml"}, "SloproxySLOFastBurn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{"prometheus.yml", "rules.yml", "alerts.yml", "rules_test.yml"} {
				raw, err := os.ReadFile(filepath.Join("prometheus", name))
				if err != nil {
					t.Fatal(err)
				}
				s := string(raw)
				if name == "alerts.yml" {
					if !strings.Contains(s, tc.old) {
						t.Fatalf("alerts.yml has no %q to break", tc.old)
					}
					s = strings.Replace(s, tc.old, tc.new, 1)
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, ok := promtool(t, dir, tc.args...)
			if ok {
				t.Fatalf("promtool %s passed on broken rules:\n%s", strings.Join(tc.args, " "), out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("promtool's output does not mention %q:\n%s", tc.want, out)
			}
		})
	}
}
