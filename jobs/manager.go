package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/state"
)

// Options configure a Manager. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// Store keeps the jobs' records; required.
	Store Store
	// Predictor answers the jobs' inputs; required.
	Predictor Predictor
	// Owner names this proxy in the records of the jobs it runs; Start
	// resumes only the running jobs of its own Owner, so that proxies
	// sharing a Store each resume theirs. "" is a name like any other.
	Owner string
	// Registerer receives the jobs' metrics. nil means none.
	Registerer prometheus.Registerer
	// Logger receives the jobs' starts, ends and retries. nil means none.
	Logger *zap.Logger
	// Chunk is how many lines one PredictJob call takes, and InFlight how
	// many such calls a job has at once: enough queued inputs to fill
	// the replicas' largest batches. 0 means 256 and 4.
	Chunk, InFlight int
	// CheckpointEvery is the time between checkpoints. 0 means 1 s.
	CheckpointEvery time.Duration
	// RetryWait is the wait before a chunk whose call failed is sent
	// again. 0 means 1 s.
	RetryWait time.Duration
}

// Manager runs jobs. Create it with NewManager, then Start it; Close
// stops every job at a checkpoint.
type Manager struct {
	opts    Options
	log     *zap.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // guards runs and closed
	runs    map[string]*run
	closed  bool
	created sync.Mutex // serializes Create's conflict check and launch
}

// run is one job running in this process.
type run struct {
	cancel  context.CancelCauseFunc
	done    chan struct{}
	started time.Time
	from    int64 // lines handled when it started

	mu  sync.Mutex // guards job
	job Job        // the checkpoint, and the counts written since
}

// errCancelled is the cause with which Cancel stops a run.
var errCancelled = errors.New("job cancelled")

// NewManager returns a Manager; Start starts it.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 256
	}
	if opts.InFlight <= 0 {
		opts.InFlight = 4
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = time.Second
	}
	if opts.RetryWait <= 0 {
		opts.RetryWait = time.Second
	}
	m := &Manager{opts: opts, log: opts.Logger, runs: map[string]*run{}}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(m)
	}
	return m
}

// Start resumes the running jobs of this Owner; ctx bounds every job.
func (m *Manager) Start(ctx context.Context) error {
	m.ctx, m.cancel = context.WithCancel(ctx)
	js, err := m.opts.Store.List(ctx)
	if err != nil {
		m.cancel()
		return fmt.Errorf("jobs: %w", err)
	}
	for _, j := range js {
		if j.State == Running && j.Owner == m.opts.Owner {
			m.log.Info("resuming job", zap.String("job", j.ID), zap.String("app", j.App), zap.Int64("after_line", j.Lines))
			m.launch(j)
		}
	}
	return nil
}

// Close stops every job after its last whole chunk, checkpoints it and
// leaves it running for the next Start.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
}

// launch starts j's runner.
func (m *Manager) launch(j Job) *run {
	ctx, cancel := context.WithCancelCause(m.ctx)
	r := &run{cancel: cancel, done: make(chan struct{}), started: time.Now(), from: j.Lines, job: j}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		cancel(nil)
		close(r.done)
		return r
	}
	m.runs[j.ID] = r
	m.wg.Go(func() {
		defer close(r.done)
		m.execute(ctx, r)
		m.mu.Lock()
		delete(m.runs, j.ID)
		m.mu.Unlock()
		cancel(nil)
	})
	return r
}

// Create checks spec and starts a job on it.
func (m *Manager) Create(ctx context.Context, spec Spec) (Job, error) {
	if m.ctx == nil {
		return Job{}, fmt.Errorf("%w: jobs: the manager is not started", state.ErrUnavailable)
	}
	if err := spec.validate(); err != nil {
		return Job{}, err
	}
	if err := m.opts.Predictor.CheckApp(spec.App); err != nil {
		return Job{}, err
	}
	total, err := countLines(ctx, spec.In)
	switch {
	case err != nil && ctx.Err() != nil:
		return Job{}, fmt.Errorf("job: counting the lines of in %q: %w", spec.In, ctx.Err())
	case err != nil:
		return Job{}, invalid("in: %v", err)
	}
	m.created.Lock()
	defer m.created.Unlock()
	js, err := m.opts.Store.List(ctx)
	if err != nil {
		return Job{}, err
	}
	for _, o := range js {
		if o.State != Running {
			continue
		}
		for _, p := range []string{filepath.Clean(o.Out), filepath.Clean(o.Errors)} {
			if p == spec.Out || p == spec.Errors {
				return Job{}, fmt.Errorf("%w: job: running job %s writes %s", state.ErrConflict, o.ID, p)
			}
		}
	}
	now := time.Now().UTC()
	j := Job{ID: newID(), Spec: spec, State: Running, Owner: m.opts.Owner, Total: total, Created: now, Updated: now}
	if err := m.opts.Store.Put(ctx, j); err != nil {
		return Job{}, err
	}
	m.log.Info("job created", zap.String("job", j.ID), zap.String("app", j.App), zap.String("in", j.In), zap.Int64("lines", total))
	m.launch(j)
	return j, nil
}

// Get returns id's record, with its rate and ETA while it runs here.
func (m *Manager) Get(ctx context.Context, id string) (Job, error) {
	if r := m.running(id); r != nil {
		return r.status(), nil
	}
	return m.opts.Store.Get(ctx, id)
}

// List returns every job's record, oldest first.
func (m *Manager) List(ctx context.Context) ([]Job, error) {
	js, err := m.opts.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	for i := range js {
		if r := m.running(js[i].ID); r != nil {
			js[i] = r.status()
		}
	}
	return js, nil
}

// Cancel stops a running job for good and returns its record; the lines
// it wrote stay. A job that has ended is returned as it is; one run by
// another proxy is a conflict.
func (m *Manager) Cancel(ctx context.Context, id string) (Job, error) {
	if r := m.running(id); r != nil {
		r.cancel(errCancelled)
		select {
		case <-r.done:
		case <-ctx.Done():
			return Job{}, ctx.Err()
		}
		return m.opts.Store.Get(ctx, id)
	}
	j, err := m.opts.Store.Get(ctx, id)
	if err != nil || j.State != Running {
		return j, err
	}
	if j.Owner != m.opts.Owner {
		return Job{}, fmt.Errorf("%w: job %s runs on proxy %q: cancel it there", state.ErrConflict, id, j.Owner)
	}
	// Recorded as running by this proxy, yet not running: the proxy is
	// closing, or was not started.
	j.State, j.Finished, j.Updated = Cancelled, time.Now().UTC(), time.Now().UTC()
	return j, m.opts.Store.Put(ctx, j)
}

func (m *Manager) running(id string) *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs[id]
}

// status is the run's record with its rate and ETA.
func (r *run) status() Job {
	r.mu.Lock()
	j := r.job
	r.mu.Unlock()
	if secs := time.Since(r.started).Seconds(); secs > 0 && j.Lines > r.from {
		j.Rate = float64(j.Lines-r.from) / secs
		j.ETA = float64(j.Total-j.Lines) / j.Rate
		if j.ETA < 0 {
			j.ETA = 0
		}
	}
	return j
}

// execute runs r's job until it ends or stops, and records how.
func (m *Manager) execute(ctx context.Context, r *run) {
	err := m.runJob(ctx, r)
	r.mu.Lock()
	j := r.job
	r.mu.Unlock()
	log := m.log.With(zap.String("job", j.ID), zap.String("app", j.App), zap.Int64("lines", j.Lines),
		zap.Int64("written", j.Written), zap.Int64("failed", j.Failed))
	now := time.Now().UTC()
	switch {
	case err == nil:
		j.State, j.Finished = Done, now
		log.Info("job done")
	case errors.Is(context.Cause(ctx), errCancelled):
		j.State, j.Finished = Cancelled, now
		log.Info("job cancelled")
	case ctx.Err() != nil:
		log.Info("job stopped with the proxy; it resumes at the next start")
		return // the checkpoint is recorded, the job still running
	default:
		j.State, j.Finished, j.Error = Failed, now, err.Error()
		log.Warn("job failed", zap.Error(err))
	}
	j.Updated = now
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.opts.Store.Put(pctx, j); err != nil {
		log.Error("recording the job's end", zap.Error(err))
	}
}

// newID returns a random job id.
func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "j" + hex.EncodeToString(b[:])
}

// countLines counts path's lines, a last one without a newline included.
// It checks ctx before each read and returns ctx.Err() once ctx is done.
func countLines(ctx context.Context, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	open := false // the last byte read ends no line
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		k, err := f.Read(buf)
		if k > 0 {
			n += int64(bytes.Count(buf[:k], []byte{'\n'}))
			open = buf[k-1] != '\n'
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if open {
		n++
	}
	return n, nil
}
