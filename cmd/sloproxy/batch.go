package main

// `sloproxy batch` starts an offline batch job and follows it; `sloproxy
// jobs ...` lists, shows and cancels jobs. Both call the admin API.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/proxy/admin"
)

// jobVerbs are the verbs of `sloproxy jobs`.
var jobVerbs = []verb{
	{"list", "", "list the batch jobs", jobsList},
	{"get", "ID", "show a batch job's progress", jobsGet},
	{"cancel", "ID", "cancel a batch job; the lines it wrote stay", jobsCancel},
}

// runJobs runs `sloproxy jobs VERB ...`.
func runJobs(args []string, stdout, stderr io.Writer) error {
	return runGroup("jobs", jobVerbs, args, stdout, stderr)
}

// batchPoll is the time between two looks at a followed job.
const batchPoll = time.Second

// runBatch runs `sloproxy batch`: it starts a job on the proxy's host
// (relative paths are made absolute here, so run it on that host) and,
// unless --detach, follows it to its end, printing its progress to stderr
// and its record to stdout. Interrupting it stops the following, not the
// job.
func runBatch(args []string, stdout, stderr io.Writer) error {
	c := &cli{group: "batch", stdout: stdout, stderr: stderr}
	c.initGlobals()
	c.synopsis = "--app APP --in FILE --out FILE [--errors FILE] [--format jsonl|csv] [--detach]"
	fs := c.flagSet("")
	var spec jobs.Spec
	var detach bool
	fs.StringVar(&spec.App, "app", "", "the `app` whose model answers the inputs")
	fs.StringVar(&spec.In, "in", "", "the input `file`: one JSON input per line, or CSV rows of numbers")
	fs.StringVar(&spec.Out, "out", "", "the output `file`: {\"line\": N, \"output\": ...} per line, in input order")
	fs.StringVar(&spec.Errors, "errors", "", "the errors `file`: {\"line\": N, \"error\": ...} per failed line (default OUT.errors)")
	fs.StringVar(&spec.Format, "format", "", "jsonl or csv (default: csv for a .csv input, else jsonl)")
	fs.BoolVar(&detach, "detach", false, "start the job and return; follow it with sloproxy jobs get ID")
	if _, err := c.parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if err := required(fs, "app", "in", "out"); err != nil {
		return err
	}
	for _, p := range []*string{&spec.In, &spec.Out, &spec.Errors} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	ac, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx()
	j, err := ac.CreateJob(ctx, spec)
	cancel()
	if err != nil {
		return err
	}
	if detach {
		return c.showJob(j)
	}
	fmt.Fprintf(stderr, "job %s: %d lines of %s through app %s\n", j.ID, j.Total, j.In, j.App)
	if j, err = follow(ac, j, stderr, isTerminal(stderr)); err != nil {
		return err
	}
	if err := c.showJob(j); err != nil {
		return err
	}
	if j.State != jobs.Done {
		return fmt.Errorf("job %s %s: %s", j.ID, j.State, orDash(j.Error))
	}
	return nil
}

// follow polls j until it ends, printing a progress line each time: over
// the previous one on a terminal, one per poll otherwise.
func follow(ac *admin.Client, j jobs.Job, w io.Writer, terminal bool) (jobs.Job, error) {
	for j.State == jobs.Running {
		time.Sleep(batchPoll)
		ctx, cancel := context.WithTimeout(context.Background(), admin.DefaultClientTimeout)
		next, err := ac.Job(ctx, j.ID)
		cancel()
		if err != nil {
			return j, err
		}
		j = next
		line := progress(j)
		if terminal {
			fmt.Fprintf(w, "\r%s   ", line)
		} else {
			fmt.Fprintln(w, line)
		}
	}
	if terminal {
		fmt.Fprintln(w)
	}
	return j, nil
}

// progress is a job's progress in one line.
func progress(j jobs.Job) string {
	pct := 100.0
	if j.Total > 0 {
		pct = 100 * float64(j.Lines) / float64(j.Total)
	}
	s := fmt.Sprintf("%s: %d/%d lines (%.1f%%), %d written, %d errors", j.State, j.Lines, j.Total, pct, j.Written, j.Failed)
	if j.Rate > 0 {
		s += fmt.Sprintf(", %.0f lines/s, ETA %s", j.Rate, (time.Duration(j.ETA) * time.Second).String())
	}
	return s
}

// showJob prints a job's record: JSON with --json, else a few lines.
func (c *cli) showJob(j jobs.Job) error {
	return c.show(j, func(w io.Writer) {
		fmt.Fprintf(w, "job\t%s\n", j.ID)
		fmt.Fprintf(w, "app\t%s\n", j.App)
		fmt.Fprintf(w, "state\t%s\n", j.State)
		if j.Error != "" {
			fmt.Fprintf(w, "error\t%s\n", j.Error)
		}
		fmt.Fprintf(w, "in\t%s (%s, %d lines)\n", j.In, j.Format, j.Total)
		fmt.Fprintf(w, "out\t%s (%d lines)\n", j.Out, j.Written)
		fmt.Fprintf(w, "errors\t%s (%d lines)\n", j.Errors, j.Failed)
		fmt.Fprintf(w, "progress\t%s\n", progress(j))
	})
}

func jobsList(c *cli, args []string) error {
	if _, err := c.parse(c.flagSet("list"), args); err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		js, err := ac.Jobs(ctx)
		if err != nil {
			return err
		}
		return c.show(admin.JobList{Jobs: js}, func(w io.Writer) {
			fmt.Fprintln(w, "JOB\tAPP\tSTATE\tLINES\tWRITTEN\tERRORS\tIN")
			for _, j := range js {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\n", j.ID, j.App, j.State, j.Lines, j.Total, j.Written, j.Failed, j.In)
			}
		})
	})
}

func jobsGet(c *cli, args []string) error {
	return c.withJob("get", args, (*admin.Client).Job)
}

func jobsCancel(c *cli, args []string) error {
	return c.withJob("cancel", args, (*admin.Client).CancelJob)
}

func (c *cli) withJob(verb string, args []string, f func(*admin.Client, context.Context, string) (jobs.Job, error)) error {
	pos, err := c.parse(c.flagSet(verb), args, "ID")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		j, err := f(ac, ctx, pos[0])
		if err != nil {
			return err
		}
		return c.showJob(j)
	})
}
