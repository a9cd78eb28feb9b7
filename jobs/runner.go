package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/state"
)

// chunk is up to Options.Chunk consecutive input lines on their way
// through the model.
type chunk struct {
	lines   []line
	end     int64    // the input's offset after the last line
	answers []Answer // by line, for the lines with an input
	err     error    // reading or predicting failed: the job ends here
	done    chan struct{}
}

// runJob streams r's job from its checkpoint to the end of its input:
// chunks are read and predicted InFlight at a time, and written in input
// order, with a checkpoint about every CheckpointEvery and at the end. It
// returns nil at the end of the input, else why it stopped (ctx done:
// the last checkpoint covers every line written).
func (m *Manager) runJob(ctx context.Context, r *run) (err error) {
	r.mu.Lock()
	j := r.job
	r.mu.Unlock()
	in, err := os.Open(j.In)
	if err != nil {
		return fmt.Errorf("in: %w", err)
	}
	defer in.Close()
	if _, err := in.Seek(j.InOffset, io.SeekStart); err != nil {
		return fmt.Errorf("in: %w", err)
	}
	out, err := openAt(j.Out, j.OutBytes)
	if err != nil {
		return err
	}
	defer out.Close()
	errs, err := openAt(j.Errors, j.ErrBytes)
	if err != nil {
		return err
	}
	defer errs.Close()

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the reader and the predictions end with ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending := make(chan *chunk, m.opts.InFlight)
	lr := &lineReader{r: bufio.NewReaderSize(in, 64<<10), format: j.Format, offset: j.InOffset}
	wg.Go(func() { m.read(ctx, lr, j.Lines, j.App, pending, &wg) })

	w := &writer{out: bufio.NewWriterSize(out, 64<<10), errs: bufio.NewWriterSize(errs, 16<<10), outF: out, errF: errs, job: j}
	last := time.Now()
	for c := range pending {
		select {
		case <-c.done:
		case <-ctx.Done():
			return errors.Join(ctx.Err(), m.checkpoint(ctx, r, w))
		}
		if c.err != nil {
			return errors.Join(c.err, m.checkpoint(ctx, r, w))
		}
		if err := w.write(c); err != nil {
			return err
		}
		r.mu.Lock()
		r.job.Lines, r.job.Written, r.job.Failed = w.job.Lines, w.job.Written, w.job.Failed
		r.mu.Unlock()
		if time.Since(last) >= m.opts.CheckpointEvery {
			if err := m.checkpoint(ctx, r, w); err != nil {
				return err
			}
			last = time.Now()
		}
	}
	if err := ctx.Err(); err != nil {
		return errors.Join(err, m.checkpoint(ctx, r, w))
	}
	return m.checkpoint(ctx, r, w)
}

// read reads the input from line after+1 in chunks, sends each to pending
// in order and starts its prediction, until the input ends, reading fails
// or ctx is done; it closes pending.
func (m *Manager) read(ctx context.Context, lr *lineReader, after int64, app string, pending chan<- *chunk, wg *sync.WaitGroup) {
	defer close(pending)
	n := after
	for {
		c := &chunk{done: make(chan struct{})}
		for len(c.lines) < m.opts.Chunk {
			l, err := lr.next(n + 1)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				c.err = fmt.Errorf("in: reading line %d: %w", n+1, err)
				break
			}
			n++
			c.lines = append(c.lines, l)
		}
		c.end = lr.offset
		if len(c.lines) == 0 && c.err == nil {
			return
		}
		last := c.err != nil || len(c.lines) < m.opts.Chunk // before predict owns c
		select {
		case pending <- c:
		case <-ctx.Done():
			return
		}
		wg.Go(func() { m.predict(ctx, app, c) })
		if last {
			return
		}
	}
}

// predict answers c's inputs, retrying the call after RetryWait while it
// fails for a reason other than the inputs', until ctx is done; it closes
// c.done.
func (m *Manager) predict(ctx context.Context, app string, c *chunk) {
	defer close(c.done)
	if c.err != nil {
		return
	}
	var inputs []json.RawMessage
	for _, l := range c.lines {
		if l.err == nil {
			inputs = append(inputs, l.input)
		}
	}
	if len(inputs) == 0 {
		return
	}
	for {
		answers, err := m.opts.Predictor.PredictJob(ctx, app, inputs)
		switch {
		case err == nil && len(answers) != len(inputs):
			c.err = fmt.Errorf("%d answers to %d inputs", len(answers), len(inputs))
			return
		case err == nil:
			c.answers = answers
			return
		case ctx.Err() != nil:
			c.err = ctx.Err()
			return
		case errors.Is(err, state.ErrNotFound):
			c.err = err
			return
		}
		m.log.Warn("job: predicting lines failed; trying again", zap.Int64("from_line", c.lines[0].n), zap.Duration("after", m.opts.RetryWait), zap.Error(err))
		t := time.NewTimer(m.opts.RetryWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.err = ctx.Err()
			return
		}
	}
}

// writer writes a job's lines and keeps its counts and offsets.
type writer struct {
	out, errs  *bufio.Writer
	outF, errF *os.File
	job        Job // the counts and offsets of what was written
	buf        []byte
}

// write writes c's lines, each on the output or the errors file.
func (w *writer) write(c *chunk) error {
	k := 0
	for _, l := range c.lines {
		b := append(w.buf[:0], `{"line":`...)
		b = strconv.AppendInt(b, l.n, 10)
		lerr := l.err
		if lerr == nil {
			a := c.answers[k]
			k++
			if lerr = a.Err; lerr == nil {
				b = append(append(append(b, `,"output":`...), a.Output...), "}\n"...)
				if _, err := w.out.Write(b); err != nil {
					return fmt.Errorf("out: %w", err)
				}
				w.job.Written++
				w.job.OutBytes += int64(len(b))
				w.buf = b
				continue
			}
		}
		msg, _ := json.Marshal(lerr.Error()) // a string always marshals
		b = append(append(append(b, `,"error":`...), msg...), "}\n"...)
		if _, err := w.errs.Write(b); err != nil {
			return fmt.Errorf("errors: %w", err)
		}
		w.job.Failed++
		w.job.ErrBytes += int64(len(b))
		w.buf = b
	}
	w.job.Lines += int64(len(c.lines))
	w.job.InOffset = c.end
	return nil
}

// checkpoint flushes and syncs both files, then records the job's counts
// and offsets: a checkpoint never covers a line that is not on disk.
func (m *Manager) checkpoint(ctx context.Context, r *run, w *writer) error {
	for _, f := range []struct {
		b *bufio.Writer
		f *os.File
	}{{w.out, w.outF}, {w.errs, w.errF}} {
		if err := f.b.Flush(); err != nil {
			return fmt.Errorf("%s: %w", f.f.Name(), err)
		}
		if err := f.f.Sync(); err != nil {
			return fmt.Errorf("%s: %w", f.f.Name(), err)
		}
	}
	r.mu.Lock()
	j := r.job
	r.mu.Unlock()
	j.Lines, j.Written, j.Failed, j.Checkpointed = w.job.Lines, w.job.Written, w.job.Failed, w.job.Lines
	j.InOffset, j.OutBytes, j.ErrBytes = w.job.InOffset, w.job.OutBytes, w.job.ErrBytes
	j.Updated = time.Now().UTC()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.opts.Store.Put(pctx, j); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	r.mu.Lock()
	r.job = j
	r.mu.Unlock()
	return nil
}

// openAt opens path for writing at size, truncating what follows: the
// part written after the checkpoint. A file shorter than size was changed
// by someone else: an error.
func openAt(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < size {
		err = fmt.Errorf("%s has %d bytes, fewer than the %d its checkpoint recorded: changed outside the job", path, fi.Size(), size)
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err == nil {
		_, err = f.Seek(size, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
