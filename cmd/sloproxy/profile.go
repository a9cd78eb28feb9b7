package main

// `sloproxy models profile` and the profile shown by `models get`; the
// --force flag of the verbs that move traffic past the profile gate.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/state"
)

// maxProfileInputs bounds the inputs read from --inputs: profiling cycles
// through them, and the largest batch rarely needs more.
const maxProfileInputs = 1024

// forceFlag registers --force on a verb that moves traffic.
func (c *cli) forceFlag(fs *flag.FlagSet) {
	fs.BoolVar(&c.force, "force", false, "move the traffic even if the profile gate refuses the version (logged at warn by the proxy)")
}

func modelsProfile(c *cli, args []string) error {
	fs := c.flagSet("profile")
	var inputs string
	var repeats int
	var wait time.Duration
	fs.StringVar(&inputs, "inputs", "", "a `file` of inputs, one JSON input per line as a query sends it (default: the version's example input, else an empty input)")
	fs.IntVar(&repeats, "repeats", 0, "batches of each size each replica sends (default 10)")
	durationVar(fs, &wait, "wait", 5*time.Minute, "how long the profile may take, a `duration`")
	pos, err := c.parse(fs, args, "NAME", "VERSION")
	if err != nil {
		return err
	}
	req := admin.ProfileRequest{Repeats: repeats}
	if inputs != "" {
		if req.Inputs, err = readInputs(inputs); err != nil {
			return err
		}
	}
	ac, err := c.client()
	if err != nil {
		return err
	}
	ac.HTTPClient = &http.Client{Timeout: wait}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	p, err := ac.Profile(ctx, pos[0], pos[1], req)
	if err != nil {
		return err
	}
	return c.show(p, func(w io.Writer) { printProfile(w, p) })
}

// readInputs reads up to maxProfileInputs JSON inputs, one a line; blank
// lines are skipped.
func readInputs(path string) ([]json.RawMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--inputs: %w", err)
	}
	defer f.Close()
	var out []json.RawMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan() && len(out) < maxProfileInputs; line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		if !json.Valid([]byte(text)) {
			return nil, fmt.Errorf("--inputs %s: line %d: not a JSON input", path, line)
		}
		out = append(out, json.RawMessage(text))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--inputs %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--inputs %s: no inputs", path)
	}
	return out, nil
}

// printProfile prints a profile as `models profile` and `models get` show
// it: the fit, a line per batch size, and what it means for each app.
func printProfile(w io.Writer, v admin.ProfileView) {
	p := v.Profile
	fmt.Fprintf(w, "profile of %s version %s: %s, input %s, at %s\n", v.Model, v.Version, plural(p.Replicas, "replica"), p.Input, p.At.Format(time.RFC3339))
	fmt.Fprintf(w, "fit: latency(n) = %v + %v·n, tail %v\n", p.A.Round(10*time.Microsecond), p.B.Round(time.Microsecond), p.Tail.Round(10*time.Microsecond))
	if p.ItemErrors > 0 {
		fmt.Fprintf(w, "warning: the model refused %d items: these latencies may not be those of real work (give --inputs, or register an example input)\n", p.ItemErrors)
	}
	fmt.Fprintln(w, "BATCH\tSAMPLES\tMIN\tP50\tP99\tTHROUGHPUT/REPLICA")
	for _, l := range p.Lines {
		fmt.Fprintf(w, "%d\t%d\t%v\t%v\t%v\t%.1f/s\n", l.Batch, l.Samples, l.Min.Round(10*time.Microsecond), l.P50.Round(10*time.Microsecond), l.P99.Round(10*time.Microsecond), l.Throughput)
	}
	if len(v.Apps) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "APP\tSLO\tBATCH-1 P99 WITHIN SLO\tLARGEST BATCH\tCOST/1K")
		for _, a := range v.Apps {
			cost := "-"
			if a.CostPer1K != nil {
				cost = fmt.Sprintf("%.4g", *a.CostPer1K)
			}
			fmt.Fprintf(w, "%s\t%v\t%s\t%d\t%s\n", a.App, time.Duration(a.SLOMillis*float64(time.Millisecond)), yesNo(a.MeetsSLO), a.LargestBatch, cost)
		}
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (the gate refuses it)"
}

// exampleInputFlag registers --example-input, the version's registered
// example input.
func exampleInputFlag(fs *flag.FlagSet, v *state.ModelVersion) {
	fs.Func("example-input", "one input as a query sends it, `JSON` (such as [0.5, 1]), that profiling sends when given none", func(s string) error {
		if !json.Valid([]byte(s)) {
			return fmt.Errorf("%q: not JSON", s)
		}
		v.ExampleInput = json.RawMessage(s)
		return nil
	})
}
