package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/state"
)

// quote answers each input with itself, for apps the state has.
type quote struct{ s *state.Store }

func (q quote) CheckApp(app string) error {
	if _, ok := q.s.Snapshot().App(app); !ok {
		return fmt.Errorf("%w: no app %q", state.ErrNotFound, app)
	}
	return nil
}

func (quote) PredictJob(_ context.Context, _ string, inputs []json.RawMessage) ([]jobs.Answer, error) {
	as := make([]jobs.Answer, len(inputs))
	for i, in := range inputs {
		as[i].Output = in
	}
	return as, nil
}

func TestJobsAPI(t *testing.T) {
	s := state.NewStore(state.NewMemory(), state.Options{})
	must(t, s.Start(t.Context()))
	t.Cleanup(func() { _ = s.Close() })
	seed(t, s)
	m := jobs.NewManager(jobs.Options{Store: jobs.NewMemory(), Predictor: quote{s}})
	must(t, m.Start(context.Background()))
	t.Cleanup(m.Close)
	srv := startAPI(t, s, Options{Token: testToken, Jobs: m})
	none := startAPI(t, s, Options{Token: testToken})

	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	must(t, os.WriteFile(in, []byte("[1]\n[2]\n"), 0o644))
	body := fmt.Sprintf(`{"app": "digits", "in": %q, "out": %q}`, in, filepath.Join(dir, "out"))

	a := call(t, srv, "POST", "/api/v1/jobs", "", body)
	if a.status != 201 {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	var j jobs.Job
	a.decodeInto(t, &j)
	deadline := time.Now().Add(10 * time.Second)
	for j.State == jobs.Running && time.Now().Before(deadline) {
		call(t, srv, "GET", "/api/v1/jobs/"+j.ID, "", "").decodeInto(t, &j)
	}
	if j.State != jobs.Done || j.Written != 2 || j.Errors != filepath.Join(dir, "out.errors") || j.Format != jobs.FormatJSONL {
		t.Fatalf("job %+v: want done, 2 written, its defaults filled", j)
	}
	var list JobList
	call(t, srv, "GET", "/api/v1/jobs", "", "").decodeInto(t, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != j.ID {
		t.Errorf("list: %+v", list)
	}
	if a := call(t, srv, "DELETE", "/api/v1/jobs/"+j.ID, "", ""); a.status != 200 {
		t.Errorf("cancelling an ended job: %d %s; want 200 with its record", a.status, a.body)
	}

	errs := []struct {
		name             string
		srv              string
		method, path     string
		body             string
		status           int
		wantErrorContain string
	}{
		{"no runner", "none", "GET", "/api/v1/jobs", "", 501, "runs no batch jobs"},
		{"unknown app", "", "POST", "/api/v1/jobs", fmt.Sprintf(`{"app": "nope", "in": %q, "out": "/tmp/x"}`, in), 404, "nope"},
		{"relative path", "", "POST", "/api/v1/jobs", `{"app": "digits", "in": "in.jsonl", "out": "/tmp/x"}`, 400, "absolute path"},
		{"unknown field", "", "POST", "/api/v1/jobs", `{"app": "digits", "input": "x"}`, 400, "input"},
		{"malformed id", "", "GET", "/api/v1/jobs/..x", "", 400, "job id"},
		{"unknown job", "", "DELETE", "/api/v1/jobs/j000000000000", "", 404, "j000000000000"},
	}
	for _, e := range errs {
		t.Run(e.name, func(t *testing.T) {
			target := srv
			if e.srv == "none" {
				target = none
			}
			a := call(t, target, e.method, e.path, "", e.body)
			if a.status != e.status {
				t.Fatalf("%d %s; want %d", a.status, a.body, e.status)
			}
			if msg := a.errorMessage(t); !strings.Contains(msg, e.wantErrorContain) {
				t.Errorf("error %q; want it to name %q", msg, e.wantErrorContain)
			}
		})
	}
}
