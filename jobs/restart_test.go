package jobs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// TestJobSurvivesSIGKILL runs a 20,000-line job on the digits example (two
// real scikit-learn processes) with a malformed line every 1,000 lines,
// kills the proxy with SIGKILL once a checkpoint is recorded and more
// lines were handled after it, and starts it again on the same data
// directory: the job resumes, the output holds every good line exactly
// once, in order, with the model's answer to that line, and the errors
// file the 20 malformed ones.
func TestJobSurvivesSIGKILL(t *testing.T) {
	testutil.RequirePython(t, "sklearn", "joblib")
	start := time.Now()
	const total, every = 20000, 1000
	root := testutil.RepoRoot(t)
	p := testutil.StartProxy(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: t}
runtimes: {process: {enabled: true, port_base: %d}}
apps:
  - {name: digits, input_type: float64, slo: 2s, default_output: "-1", models: [digits-logreg]}
models:
  - name: digits-logreg
    version: "1"
    input_type: float64
    command: [/usr/bin/python3, %s, --model, %s, --input-type, float64, --max-batch, "4"]
    replicas: 2
`, testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreePort(t),
		filepath.Join(root, "examples/sklearn/serve.py"), filepath.Join(root, "examples/sklearn/digits_logreg.joblib")))

	rng := rand.New(rand.NewPCG(1, 2))
	inputs := make([]string, total+1) // by line number; "" for a malformed line
	var in strings.Builder
	for n := 1; n <= total; n++ {
		if n%every == 0 {
			in.WriteString(`{"malformed": ` + "\n")
			continue
		}
		px := make([]string, 64)
		for i := range px {
			px[i] = fmt.Sprint(rng.IntN(17))
		}
		inputs[n] = "[" + strings.Join(px, ",") + "]"
		in.WriteString(inputs[n] + "\n")
	}
	dir := t.TempDir()
	spec := jobs.Spec{App: "digits", In: filepath.Join(dir, "in.jsonl"), Out: filepath.Join(dir, "out.jsonl")}
	if err := os.WriteFile(spec.In, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ac := &admin.Client{BaseURL: "http://" + p.Admin, Token: "t"}
	ctx := context.Background()
	t.Logf("%v: started", time.Since(start))
	j, err := ac.CreateJob(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Minute, "a checkpoint with lines handled after it", func() bool {
		j, err = ac.Job(ctx, j.ID)
		return err == nil && j.Checkpointed > 0 && j.Lines > j.Checkpointed
	})
	if j.State != jobs.Running || j.Lines == total {
		t.Fatalf("the job ended before the kill: %+v; the test needs a slower job", j)
	}
	groups := testutil.Children(p.Pid())
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Minute); err == nil {
		t.Fatal("sloproxy exited cleanly after SIGKILL")
	}
	t.Logf("killed at line %d of %d, checkpoint at %d; %d lines on the output file", j.Lines, total, j.Checkpointed, len(readLines(t, spec.Out)))
	testutil.Eventually(t, time.Minute, "the model processes gone with the proxy", func() bool {
		for _, g := range groups {
			if len(testutil.GroupMembers(g)) > 0 {
				return false
			}
		}
		return true
	})

	t.Logf("%v: killed", time.Since(start))
	p = testutil.StartProxyIn(t, p.Dir, p.Config)
	t.Logf("%v: restarted", time.Since(start))
	ac.BaseURL = "http://" + p.Admin
	testutil.Eventually(t, 2*time.Minute, "the resumed job to end", func() bool {
		j, err = ac.Job(ctx, j.ID)
		return err == nil && j.State != jobs.Running
	})
	if j.State != jobs.Done || j.Lines != total || j.Written != total-total/every || j.Failed != total/every {
		t.Fatalf("after the restart: %+v; want done, %d written and %d failed", j, total-total/every, total/every)
	}

	t.Logf("%v: done", time.Since(start))
	// Every good line once, in order; its output the model's answer to it,
	// asked again for a sample of lines.
	out := readLines(t, spec.Out)
	var sample []int
	want := 1
	for i, l := range out {
		var rec struct {
			Line   int             `json:"line"`
			Output json.RawMessage `json:"output"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("output line %d: %q: %v", i+1, l, err)
		}
		if want%every == 0 {
			want++
		}
		if rec.Line != want || len(rec.Output) == 0 {
			t.Fatalf("output line %d is %q; want input line %d, with an output", i+1, l, want)
		}
		if want%97 == 0 {
			sample = append(sample, i)
		}
		want++
	}
	if len(out) != total-total/every {
		t.Fatalf("%d output lines, want %d", len(out), total-total/every)
	}
	checkOutputs(t, p.Query, out, sample, inputs)
	errs := readLines(t, spec.Out+".errors")
	if len(errs) != total/every {
		t.Fatalf("%d error lines, want %d:\n%s", len(errs), total/every, strings.Join(errs, "\n"))
	}
	for i, l := range errs {
		if !strings.HasPrefix(l, fmt.Sprintf(`{"line":%d,"error":"not JSON`, (i+1)*every)) {
			t.Errorf("error line %d: %s; want line %d's", i+1, l, (i+1)*every)
		}
	}
}

// checkOutputs asks the app again, online, for the inputs of the output
// lines at sample and compares the answers with the job's.
func checkOutputs(t *testing.T, query string, out []string, sample []int, inputs []string) {
	t.Helper()
	var batch []string
	var want []string
	for _, i := range sample {
		var rec struct {
			Line   int             `json:"line"`
			Output json.RawMessage `json:"output"`
		}
		_ = json.Unmarshal([]byte(out[i]), &rec)
		batch = append(batch, inputs[rec.Line])
		want = append(want, string(rec.Output))
	}
	resp, err := http.Post("http://"+query+"/apps/digits/predict", "application/json",
		strings.NewReader(`{"input_batch": [`+strings.Join(batch, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Batch []struct {
			Output  json.RawMessage `json:"output"`
			Default bool            `json:"default"`
		} `json:"batch_predictions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.Batch) != len(want) {
		t.Fatalf("asking again: %v, %d answers for %d", err, len(got.Batch), len(want))
	}
	for i, a := range got.Batch {
		if a.Default || string(a.Output) != want[i] {
			t.Errorf("output line %d: the job answered %s, the model now %s (default %v)", sample[i]+1, want[i], a.Output, a.Default)
		}
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
