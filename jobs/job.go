package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

// Spec is what a job is asked to do. Paths are on the proxy's host.
type Spec struct {
	// App names the app whose model answers the inputs.
	App string `json:"app"`
	// In is the input file, one input per line; an absolute path.
	In string `json:"in"`
	// Out is the output file, created or overwritten; an absolute path.
	Out string `json:"out"`
	// Errors is the errors file. "" means Out with ".errors" appended.
	Errors string `json:"errors,omitempty"`
	// Format is "jsonl" (each line one JSON input) or "csv" (each line a
	// row of numbers, the input a JSON array of them, no header). ""
	// means csv when In ends in .csv, else jsonl.
	Format string `json:"format,omitempty"`
}

// The formats of an input file.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// A job's states.
const (
	Running   = "running"
	Done      = "done"
	Failed    = "failed"
	Cancelled = "cancelled"
)

// Job is a job's record: its spec, its state and its checkpoint.
type Job struct {
	ID string `json:"id"`
	Spec
	State string `json:"state"`
	// Owner names the proxy that runs the job (Options.Owner): the one
	// whose host holds the files, and the one that resumes it.
	Owner string `json:"owner,omitempty"`
	// Error says why a failed job failed.
	Error string `json:"error,omitempty"`
	// Total is the number of lines in the input, counted at creation.
	Total int64 `json:"total"`
	// Checkpoint: Lines input lines handled, Written of them on the
	// output file and Failed on the errors file; the input's byte offset
	// after them and both files' sizes.
	Lines int64 `json:"lines"`
	// Checkpointed is how many lines the last checkpoint covers: a
	// restart resumes after them. Lines runs ahead of it between
	// checkpoints.
	Checkpointed int64 `json:"checkpointed"`
	Written      int64 `json:"written"`
	Failed       int64 `json:"failed"`
	InOffset     int64 `json:"in_offset"`
	OutBytes     int64 `json:"out_bytes"`
	ErrBytes     int64 `json:"err_bytes"`
	// Created, Updated and Finished (zero while running) are the record's
	// times.
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Finished time.Time `json:"finished,omitzero"`
	// Rate (lines a second since this proxy started or resumed the job)
	// and ETA (seconds left at that rate) are filled for a running job
	// by the proxy that runs it; they are not stored.
	Rate float64 `json:"rate,omitempty"`
	ETA  float64 `json:"eta_seconds,omitempty"`
}

// Store keeps the jobs' records. Bolt and Memory implement it.
type Store interface {
	// Put writes j's record, replacing the one with its id.
	Put(ctx context.Context, j Job) error
	// Get returns the record of id, or an error wrapping state.ErrNotFound.
	Get(ctx context.Context, id string) (Job, error)
	// List returns every record, oldest first.
	List(ctx context.Context) ([]Job, error)
}

// Predictor answers a job's inputs. The proxy implements it.
type Predictor interface {
	// CheckApp says why app cannot take a job (no such app, no model
	// linked), or nil.
	CheckApp(app string) error
	// PredictJob answers inputs, in order, with app's model at the lowest
	// priority class. An input's own failure (it does not fit the app,
	// the model refused it) is its Answer's Err; any other failure (no
	// replica yet, replicas failing, shutting down, ctx done) is the
	// call's error, and the call may be retried. An error wrapping
	// state.ErrNotFound says the app is gone: the job fails.
	PredictJob(ctx context.Context, app string, inputs []json.RawMessage) ([]Answer, error)
}

// Answer is one input's outcome: its output as JSON, or its error.
type Answer struct {
	Output json.RawMessage
	Err    error
}

// validate cleans s's paths, checks s and fills its defaults.
func (s *Spec) validate() error {
	// Clean paths name a file one way, so that the checks here and the
	// Manager's check against running jobs compare files, not spellings.
	for _, p := range []*string{&s.In, &s.Out, &s.Errors} {
		if *p != "" {
			*p = filepath.Clean(*p)
		}
	}
	if s.Errors == "" && s.Out != "" {
		s.Errors = s.Out + ".errors"
	}
	if s.Format == "" {
		s.Format = FormatJSONL
		if strings.EqualFold(filepath.Ext(s.In), ".csv") {
			s.Format = FormatCSV
		}
	}
	switch {
	case s.App == "":
		return invalid("app is required")
	case s.Format != FormatJSONL && s.Format != FormatCSV:
		return invalid("format %q: want %q or %q", s.Format, FormatJSONL, FormatCSV)
	}
	paths := []struct{ name, path string }{{"in", s.In}, {"out", s.Out}, {"errors", s.Errors}}
	for i, p := range paths {
		if !filepath.IsAbs(p.path) {
			return invalid("%s %q: want an absolute path on the proxy's host", p.name, p.path)
		}
		for _, q := range paths[:i] {
			if q.path == p.path {
				return invalid("%s and %s are the same file %q", q.name, p.name, p.path)
			}
		}
	}
	if fi, err := os.Stat(s.In); err != nil {
		return invalid("in: %v", err)
	} else if !fi.Mode().IsRegular() {
		return invalid("in %q is not a regular file", s.In)
	}
	for _, p := range paths[1:] {
		if fi, err := os.Stat(filepath.Dir(p.path)); err != nil || !fi.IsDir() {
			return invalid("%s %q: its directory does not exist", p.name, p.path)
		}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: job: %s", state.ErrInvalid, fmt.Sprintf(format, args...))
}
