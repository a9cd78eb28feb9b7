package main

// `sloproxy bench goodput`: the goodput curve of runs that
// `sloproxy bench --json` wrote, one line per configuration.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sloproxy/sloproxy/loadtest"
)

const goodputUsage = `usage: sloproxy bench goodput --out FILE [--bound N] [--title T] NAME=RUN.json...

Draws a goodput curve as a PNG: for each run (the JSON of sloproxy bench
--json), the answers a model gave within the SLO per second against the
rate offered, one line per NAME (a controller, say) through the mean of
its runs at each rate. --bound draws the capacity and 0.9 × it.

`

// runGoodput runs `sloproxy bench goodput`.
func runGoodput(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench goodput", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, goodputUsage)
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "the PNG to write (required)")
	bound := fs.Float64("bound", 0, "the capacity in requests per second, drawn with 0.9 × it; 0 for none")
	title := fs.String("title", "goodput", "the plot's title")
	if err := fs.Parse(args); err != nil {
		return helpIsNoError(err)
	}
	if err := required(fs, "out"); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("name at least one run as NAME=RUN.json")
	}
	var curves []loadtest.GoodputCurve
	for _, arg := range fs.Args() {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("%q: want NAME=RUN.json", arg)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var r loadtest.Result
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		i := slices.IndexFunc(curves, func(c loadtest.GoodputCurve) bool { return c.Name == name })
		if i < 0 {
			i = len(curves)
			curves = append(curves, loadtest.GoodputCurve{Name: name})
		}
		curves[i].Runs = append(curves[i].Runs, &r)
		offered, inTime := r.Goodput()
		fmt.Fprintf(stdout, "%s\t%.0f/s offered\t%.0f/s in time\t%s\n", name, offered, inTime, path)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	err = loadtest.WriteGoodputPNG(f, *title, *bound, curves)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
