package admin

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/state"
)

// JobRunner runs offline batch jobs: package jobs' Manager.
type JobRunner interface {
	Create(ctx context.Context, spec jobs.Spec) (jobs.Job, error)
	Get(ctx context.Context, id string) (jobs.Job, error)
	List(ctx context.Context) ([]jobs.Job, error)
	Cancel(ctx context.Context, id string) (jobs.Job, error)
}

// JobList is the answer of GET /api/v1/jobs.
type JobList struct {
	Jobs []jobs.Job `json:"jobs"`
}

// runner returns the job runner, or the 501 of a proxy without one.
func (h *handler) runner() (JobRunner, error) {
	if h.jobs == nil {
		return nil, errorf(http.StatusNotImplemented, "jobs: this proxy runs no batch jobs")
	}
	return h.jobs, nil
}

// POST /api/v1/jobs {"app", "in", "out", "errors"?, "format"?} starts a
// job and answers its record, 201.
func (h *handler) createJob(w http.ResponseWriter, r *http.Request) error {
	jr, err := h.runner()
	if err != nil {
		return err
	}
	var spec jobs.Spec
	if err := decode(w, r, &spec); err != nil {
		return err
	}
	j, err := jr.Create(r.Context(), spec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, j)
	return nil
}

// GET /api/v1/jobs lists every job, oldest first.
func (h *handler) listJobs(w http.ResponseWriter, r *http.Request) error {
	jr, err := h.runner()
	if err != nil {
		return err
	}
	js, err := jr.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, JobList{Jobs: nonNil(js)})
	return nil
}

// GET /api/v1/jobs/{job} answers a job's record, with its rate and ETA
// while it runs.
func (h *handler) getJob(w http.ResponseWriter, r *http.Request) error {
	return h.withJob(w, r, JobRunner.Get)
}

// DELETE /api/v1/jobs/{job} cancels a job and answers its record.
func (h *handler) cancelJob(w http.ResponseWriter, r *http.Request) error {
	return h.withJob(w, r, JobRunner.Cancel)
}

func (h *handler) withJob(w http.ResponseWriter, r *http.Request, f func(JobRunner, context.Context, string) (jobs.Job, error)) error {
	jr, err := h.runner()
	if err != nil {
		return err
	}
	id := mux.Vars(r)["job"]
	// A job id is a name; which one is a job's is the runner's to say,
	// with a 404 for any other.
	if !state.ValidName(id) {
		return badRequest("job id %q in the path: must match [a-z0-9][a-z0-9_.-]{0,62}", clip.String(id))
	}
	j, err := f(jr, r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}

// CreateJob starts a batch job.
func (c *Client) CreateJob(ctx context.Context, spec jobs.Spec) (jobs.Job, error) {
	var j jobs.Job
	err := c.do(ctx, http.MethodPost, pathJobs, spec, &j)
	return j, err
}

// Job returns a job's record.
func (c *Client) Job(ctx context.Context, id string) (jobs.Job, error) {
	var j jobs.Job
	err := c.do(ctx, http.MethodGet, pathJobs+"/"+seg(id), nil, &j)
	return j, err
}

// Jobs lists every job.
func (c *Client) Jobs(ctx context.Context) ([]jobs.Job, error) {
	var list JobList
	err := c.do(ctx, http.MethodGet, pathJobs, nil, &list)
	return list.Jobs, err
}

// CancelJob cancels a job and returns its record.
func (c *Client) CancelJob(ctx context.Context, id string) (jobs.Job, error) {
	var j jobs.Job
	err := c.do(ctx, http.MethodDelete, pathJobs+"/"+seg(id), nil, &j)
	return j, err
}
