package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a Predictor that answers each input with itself, refuses the
// input "refuse" and, while gate is set, waits for it before answering.
type echo struct {
	mu    sync.Mutex // guards gate and calls
	gate  chan struct{}
	calls int
	// holdAfter, when above zero, makes every call after the first
	// holdAfter wait for its context's end: a replica that stops answering.
	holdAfter int
}

func (e *echo) CheckApp(app string) error {
	if app != "app" {
		return fmt.Errorf("%w: no app %q", state.ErrNotFound, app)
	}
	return nil
}

func (e *echo) PredictJob(ctx context.Context, _ string, inputs []json.RawMessage) ([]Answer, error) {
	e.mu.Lock()
	e.calls++
	gate := e.gate
	if e.holdAfter > 0 && e.calls > e.holdAfter {
		gate = make(chan struct{})
	}
	e.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	as := make([]Answer, len(inputs))
	for i, in := range inputs {
		if string(in) == `"refuse"` {
			as[i].Err = errors.New("the model refused it")
			continue
		}
		as[i].Output = in
	}
	return as, nil
}

func newManager(t *testing.T, store Store, p Predictor) *Manager {
	t.Helper()
	m := NewManager(Options{Store: store, Predictor: p, Chunk: 2, InFlight: 2, CheckpointEvery: time.Nanosecond, RetryWait: time.Millisecond})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func waitEnd(t *testing.T, m *Manager, id string) Job {
	t.Helper()
	var j Job
	testutil.Eventually(t, 10*time.Second, "the job to end", func() bool {
		var err error
		j, err = m.Get(context.Background(), id)
		return err == nil && j.State != Running
	})
	return j
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEveryLineIsWrittenOnceInOrder(t *testing.T) {
	tests := []struct {
		name, file, in, out, errs string
	}{
		{"jsonl", "in.jsonl", "[1,2]\n\"refuse\"\n{bad\n\n[3]", // the last line has no newline
			`{"line":1,"output":[1,2]}` + "\n" + `{"line":5,"output":[3]}` + "\n",
			`{"line":2,"error":"the model refused it"}` + "\n" + `{"line":3,"error":"not JSON: {bad"}` + "\n" + `{"line":4,"error":"empty line"}` + "\n"},
		{"csv", "in.csv", "1,2.5\r\n3,x\n-4e2 , 5\nNaN\n",
			`{"line":1,"output":[1,2.5]}` + "\n" + `{"line":3,"output":[-400,5]}` + "\n",
			`{"line":2,"error":"field 2: \"x\" is not a number"}` + "\n" + `{"line":4,"error":"field 1: \"NaN\" is not a number"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, tt.file)
			if err := os.WriteFile(in, []byte(tt.in), 0o644); err != nil {
				t.Fatal(err)
			}
			m := newManager(t, NewMemory(), &echo{})
			j, err := m.Create(context.Background(), Spec{App: "app", In: in, Out: filepath.Join(dir, "out")})
			if err != nil {
				t.Fatal(err)
			}
			j = waitEnd(t, m, j.ID)
			if got := read(t, j.Out); got != tt.out {
				t.Errorf("output:\n%s\nwant:\n%s", got, tt.out)
			}
			if got := read(t, j.Errors); got != tt.errs {
				t.Errorf("errors:\n%s\nwant:\n%s", got, tt.errs)
			}
			if j.State != Done || j.Lines != j.Total || j.Lines != j.Written+j.Failed || j.Checkpointed != j.Lines {
				t.Errorf("record %+v: want done, every line counted once and checkpointed", j)
			}
		})
	}
}

// TestResumeDropsWhatFollowsTheCheckpoint stops a job mid-way, as a crash
// after writing and before checkpointing leaves it (lines on the output
// file past the checkpoint), and resumes it with a new Manager on the
// same store: every line is on the output once.
func TestResumeDropsWhatFollowsTheCheckpoint(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var lines, want []string
	for i := 1; i <= 50; i++ {
		lines = append(lines, fmt.Sprint(i))
		want = append(want, fmt.Sprintf(`{"line":%d,"output":%d}`, i, i))
	}
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store, p := NewMemory(), &echo{holdAfter: 10} // 20 lines answered, then none
	m := NewManager(Options{Store: store, Predictor: p, Chunk: 2, InFlight: 2, CheckpointEvery: time.Nanosecond})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := m.Create(context.Background(), Spec{App: "app", In: in, Out: filepath.Join(dir, "out")})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "some lines checkpointed", func() bool {
		j, _ := store.Get(context.Background(), j.ID)
		return j.Checkpointed >= 10
	})
	m.Close()
	j, err = store.Get(context.Background(), j.ID)
	if err != nil || j.State != Running || j.Checkpointed == j.Total {
		t.Fatalf("after Close: %+v, %v; want a running job part-way", j, err)
	}
	// The crash window: lines written after the checkpoint.
	f, err := os.OpenFile(j.Out, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `{"line":%d,"output":"written, not checkpointed"}`+"\n", j.Checkpointed+1)
	f.Close()

	m2 := newManager(t, store, &echo{})
	j = waitEnd(t, m2, j.ID)
	if got := read(t, j.Out); got != strings.Join(want, "\n")+"\n" {
		t.Errorf("output after the restart:\n%s\nwant every line once, in order", got)
	}
	if j.State != Done || j.Written != 50 || j.Failed != 0 {
		t.Errorf("record %+v", j)
	}
}

func TestCancelAndRefusals(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte("1\n2\n3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &echo{gate: make(chan struct{})}
	m := newManager(t, NewMemory(), p)
	ctx := context.Background()
	j, err := m.Create(ctx, Spec{App: "app", In: in, Out: filepath.Join(dir, "out")})
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		spec Spec
		want error
	}{
		{Spec{App: "nope", In: in, Out: filepath.Join(dir, "o2")}, state.ErrNotFound},
		{Spec{App: "app", In: "rel.jsonl", Out: filepath.Join(dir, "o2")}, state.ErrInvalid},
		{Spec{App: "app", In: in, Out: in}, state.ErrInvalid},
		{Spec{App: "app", In: filepath.Join(dir, "missing"), Out: filepath.Join(dir, "o2")}, state.ErrInvalid},
		{Spec{App: "app", In: in, Out: filepath.Join(dir, "no", "dir")}, state.ErrInvalid},
		{Spec{App: "app", In: in, Out: filepath.Join(dir, "o2"), Format: "xml"}, state.ErrInvalid},
		{Spec{App: "app", In: in, Out: j.Out}, state.ErrConflict},                                                   // a running job writes it
		{Spec{App: "app", In: in, Out: dir + "//out"}, state.ErrConflict},                                           // the same file, spelled otherwise
		{Spec{App: "app", In: in, Out: filepath.Join(dir, "o2"), Errors: dir + "/./out.errors"}, state.ErrConflict}, // its errors file
		{Spec{App: "app", In: dir + "/x/../in.jsonl", Out: in}, state.ErrInvalid},                                   // in and out the same file
	}
	for _, r := range refusals {
		if _, err := m.Create(ctx, r.spec); !errors.Is(err, r.want) {
			t.Errorf("Create(%+v): %v, want %v", r.spec, err, r.want)
		}
	}
	j, err = m.Cancel(ctx, j.ID)
	if err != nil || j.State != Cancelled || j.Lines != j.Written+j.Failed {
		t.Fatalf("Cancel: %+v, %v", j, err)
	}
	if _, err := m.Get(ctx, "j000000000000"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of an unknown job: %v", err)
	}
}

func TestShortenedOutputFailsTheJob(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out")
	if err := os.WriteFile(in, []byte("1\n2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := NewMemory()
	now := time.Now()
	_ = store.Put(context.Background(), Job{ID: "j0123456789ab", Spec: Spec{App: "app", In: in, Out: out, Errors: out + ".errors", Format: FormatJSONL},
		State: Running, Total: 2, Lines: 1, Checkpointed: 1, Written: 1, InOffset: 2, OutBytes: 23, Created: now, Updated: now})
	m := newManager(t, store, &echo{})
	j := waitEnd(t, m, "j0123456789ab")
	if j.State != Failed || !strings.Contains(j.Error, "fewer than the 23 its checkpoint recorded") {
		t.Errorf("record %+v: want failed, naming the checkpoint's size", j)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"[1,2]", "{bad", "", "1,2.5", "NaN", "3,x", `"s"`, "1e400", "0x1p3"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, csv bool) {
		format := FormatJSONL
		if csv {
			format = FormatCSV
		}
		in, err := parse([]byte(s), format)
		if err == nil && !json.Valid(in) {
			t.Fatalf("parse(%q, %s) = %s: not JSON", s, format, in)
		}
	})
}

// TestCreateStopsWithItsContext: counting the input's lines ends with the
// request's context, as that context's error rather than a refusal.
func TestCreateStopsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte("1\n2\n3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, NewMemory(), &echo{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Create(ctx, Spec{App: "app", In: in, Out: filepath.Join(dir, "out")})
	if !errors.Is(err, context.Canceled) || errors.Is(err, state.ErrInvalid) {
		t.Fatalf("Create with a cancelled context: %v, want context.Canceled", err)
	}
	if js, err := m.List(context.Background()); err != nil || len(js) != 0 {
		t.Fatalf("List: %v, %v; want no job", js, err)
	}
}
