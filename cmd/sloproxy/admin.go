package main

// The admin subcommands, `sloproxy apps ...` and `sloproxy models ...`:
// flag parsing and output formatting over admin.Client, which makes the
// calls. Each verb is one small function; the tables list them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// Environment variables that supply the global flags' defaults.
const (
	envAdminURL   = "SLOPROXY_ADMIN"
	envAdminToken = "SLOPROXY_ADMIN_TOKEN"
)

// verb is one subcommand of a group such as `sloproxy apps`.
type verb struct {
	name    string
	args    string // the synopsis after the verb's name
	summary string
	run     func(c *cli, args []string) error
}

// appVerbs are the verbs of `sloproxy apps`.
var appVerbs = []verb{
	{"list", "", "list the apps", appsList},
	{"get", "NAME", "show an app and the models it uses", appsGet},
	{"create", "--name NAME --input-type TYPE --slo DURATION [--default-output S] [--policy P] [--priority N] [--cache-ttl D | --no-cache] [--replace]", "create an app (--replace: create or replace)", appsCreate},
	{"delete", "NAME", "delete an app and its links", appsDelete},
	{"link", "APP MODEL [--force]", "let APP use MODEL (its current version must pass the profile gate)", appsLink},
	{"unlink", "APP MODEL", "stop APP from using MODEL", appsUnlink},
	{"select", "APP SPEC|@FILE [--force]", "set APP's selection policy and its settings (JSON, as docs/selection.md) for every proxy, in place of the configuration file's", appsSelect},
	{"clear-selection", "APP", "remove what select set: APP's policy takes the configuration file's settings, or its defaults", appsClearSelection},
	{"selection", "APP", "show APP's selection policy: its spec, where it comes from, and what it learned", appsSelection},
	{"set-features", "APP SPEC|@FILE", "set APP's feature lookup (JSON, as docs/http.md) for every proxy, in place of the configuration file's", appsSetFeatures},
	{"clear-features", "APP", "remove what set-features set: APP looks its features up as the configuration file says, or not at all", appsClearFeatures},
	{"features", "APP", "show APP's feature lookup and where it comes from", appsFeatures},
}

// modelVerbs are the verbs of `sloproxy models`.
var modelVerbs = []verb{
	{"deploy", "--name NAME --version V --image IMAGE --input-type TYPE [--replicas N] [--gpus all|N|device=ID,...] [--cpus N] [--memory SIZE] [--env KEY=VALUE] [--batch-size N] [--example-input JSON] [--wait D] [--no-switch] [--force]",
		"deploy a docker image: register the version, wait for its replicas, then move traffic to it", modelsDeploy},
	{"list", "", "list the models and their versions", modelsList},
	{"get", "NAME", "show a model's versions and replicas", modelsGet},
	{"register", "--name NAME --version V --input-type TYPE --runtime process|external|docker [runtime flags] [--replicas N] [--batch-size N] [--example-input JSON]", "register a model version", modelsRegister},
	{"rollback", "NAME VERSION [--force]", "make VERSION the current version (deploy or roll back; it must pass the profile gate)", modelsRollback},
	{"scale", "NAME VERSION N", "set the desired replica count of a version", modelsScale},
	{"autoscale", "NAME VERSION (--max N [--min N] [--target F] [--scale-down-delay D] | --off)", "let the autoscaler set a version's replica count from its demand, or stop it", modelsAutoscale},
	{"delete-version", "NAME VERSION", "delete a version (and the model with its last)", modelsDeleteVersion},
	{"profile", "NAME VERSION [--inputs FILE] [--repeats N] [--wait D]", "measure a version's replicas at batch sizes 1, 2, 4, ... and store the profile with it", modelsProfile},
}

// runApps runs `sloproxy apps VERB ...`.
func runApps(args []string, stdout, stderr io.Writer) error {
	return runGroup("apps", appVerbs, args, stdout, stderr)
}

// runModels runs `sloproxy models VERB ...`.
func runModels(args []string, stdout, stderr io.Writer) error {
	return runGroup("models", modelVerbs, args, stdout, stderr)
}

// cli is one run of an admin subcommand: its streams and global flags.
type cli struct {
	group          string
	synopsis       string // the running verb's, for its usage
	stdout, stderr io.Writer

	// The global flags, accepted before the verb and among its arguments.
	adminURL string
	token    string
	json     bool

	// force is --force, of the verbs that move traffic (forceFlag).
	force bool
}

// runGroup parses the global flags up to the verb, then runs the verb.
func runGroup(group string, verbs []verb, args []string, stdout, stderr io.Writer) error {
	c := &cli{group: group, stdout: stdout, stderr: stderr}
	c.initGlobals()
	fs := c.flagSet("")
	fs.Usage = func() { c.groupUsage(verbs) }
	if err := fs.Parse(args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() == 0 {
		c.groupUsage(verbs)
		return fmt.Errorf("missing subcommand")
	}
	name := fs.Arg(0)
	for _, v := range verbs {
		if v.name == name {
			c.synopsis = v.args
			return helpIsNoError(v.run(c, fs.Args()[1:]))
		}
	}
	c.groupUsage(verbs)
	return fmt.Errorf("unknown subcommand %q", name)
}

// initGlobals sets the global flags' defaults from the environment.
func (c *cli) initGlobals() {
	c.adminURL, c.token = os.Getenv(envAdminURL), os.Getenv(envAdminToken)
	if c.adminURL == "" {
		c.adminURL = admin.DefaultURL
	}
}

// helpIsNoError turns the error of -h, whose usage was printed, into nil.
func helpIsNoError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (c *cli) groupUsage(verbs []verb) {
	w := tabwriter.NewWriter(c.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "usage: sloproxy %s [global flags] <subcommand> [arguments]\n\nsubcommands:\n", c.group)
	for _, v := range verbs {
		fmt.Fprintf(w, "  %s %s\t%s\n", v.name, short(v.args), v.summary)
	}
	_ = w.Flush()
	fmt.Fprintf(c.stderr, "\nglobal flags (before or after the subcommand):\n"+
		"  --admin URL    the admin API (default $%s, else %s)\n"+
		"  --token TOKEN  its bearer token (default $%s)\n"+
		"  --json         print the API's JSON instead of tables\n"+
		"\nsloproxy %s <subcommand> -h shows a subcommand's flags.\n", envAdminURL, admin.DefaultURL, envAdminToken, c.group)
}

// short abbreviates a long synopsis to its positional arguments.
func short(args string) string {
	if strings.HasPrefix(args, "--") {
		return "[flags]"
	}
	return args
}

// flagSet returns a FlagSet for verb (or the group, for "") with the global
// flags registered, their defaults being the values parsed so far.
func (c *cli) flagSet(verb string) *flag.FlagSet {
	name := "sloproxy " + c.group
	if verb != "" {
		name += " " + verb
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.adminURL, "admin", c.adminURL, "the admin API's `URL` (default $"+envAdminURL+", else "+admin.DefaultURL+")")
	fs.Var((*secretFlag)(&c.token), "token", "the admin API's bearer `token` (default $"+envAdminToken+")")
	fs.BoolVar(&c.json, "json", c.json, "print the API's JSON instead of tables")
	return fs
}

// parse parses args, flags and positional arguments in any order (the
// standard flag package stops at the first positional one; everything
// after "--" is positional), and checks that there are as many positional
// arguments as names.
func (c *cli) parse(fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: %s %s\n\nflags:\n", fs.Name(), c.synopsis)
		fs.PrintDefaults()
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if len(positional) != len(names) {
		fs.Usage()
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: takes no arguments, got %q", fs.Name(), positional)
		}
		return nil, fmt.Errorf("%s: want %d arguments (%s), got %d", fs.Name(), len(names), strings.Join(names, " "), len(positional))
	}
	return positional, nil
}

// client returns the admin API's client.
func (c *cli) client() (*admin.Client, error) {
	if c.token == "" {
		return nil, fmt.Errorf("no admin token: pass --token or set $%s", envAdminToken)
	}
	return &admin.Client{BaseURL: c.adminURL, Token: c.token, Force: c.force}, nil
}

// ctx bounds one command.
func (c *cli) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), admin.DefaultClientTimeout)
}

// call runs f with the admin client and a context.
func (c *cli) call(f func(ctx context.Context, ac *admin.Client) error) error {
	ac, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx()
	defer cancel()
	return f(ctx, ac)
}

// show prints v as JSON with --json, else as table prints it.
func (c *cli) show(v any, table func(w io.Writer)) error {
	if c.json {
		return c.printJSON(v)
	}
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// printJSON prints v, an answer of the API, as the API encodes it.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// done prints a one-line confirmation, unless --json asks for data only.
func (c *cli) done(format string, args ...any) {
	if !c.json {
		fmt.Fprintf(c.stdout, format+"\n", args...)
	}
}

// ---- apps ----

func appsList(c *cli, args []string) error {
	fs := c.flagSet("list")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		apps, err := ac.Apps(ctx)
		if err != nil {
			return err
		}
		return c.show(admin.AppList{Apps: apps}, func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tINPUT\tSLO\tPOLICY\tPRIORITY\tMODELS")
			for _, a := range apps {
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%d\t%s\n", a.Name, a.InputType, a.SLO(), orDash(policyOf(a)), a.Priority, list(a.Models))
			}
		})
	})
}

func appsGet(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("get"), args, "NAME")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		a, err := ac.App(ctx, pos[0])
		if err != nil {
			return err
		}
		return c.showApp(a)
	})
}

// policyOf is the selection policy a runs: the one the spec set through
// the admin API names, marked so (single when that spec is invalid, as
// the proxy serves it), else the one the app names.
func policyOf(a admin.AppView) string {
	if a.Selection == nil {
		return a.Policy
	}
	s, err := selection.ParseSpec(a.Selection)
	if err != nil {
		return fmt.Sprintf("single (the spec set by apps select is invalid: %v)", err)
	}
	return s.Policy + " (set by apps select)"
}

func (c *cli) showApp(a admin.AppView) error {
	return c.show(a, func(w io.Writer) {
		policy := policyOf(a)
		if policy == "" {
			policy = "single (the first linked model)"
		}
		fmt.Fprintf(w, "name:\t%s\n", a.Name)
		fmt.Fprintf(w, "input type:\t%s\n", a.InputType)
		fmt.Fprintf(w, "slo:\t%v\n", a.SLO())
		fmt.Fprintf(w, "default output:\t%q\n", a.DefaultOutput)
		fmt.Fprintf(w, "policy:\t%s\n", policy)
		fmt.Fprintf(w, "priority:\t%d\n", a.Priority)
		switch {
		case a.NoCache:
			fmt.Fprintf(w, "cache:\toff\n")
		case a.CacheTTLSeconds == 0:
			fmt.Fprintf(w, "cache:\tthe cache's default TTL\n")
		default:
			fmt.Fprintf(w, "cache:\tTTL %v\n", time.Duration(a.CacheTTLSeconds*float64(time.Second)))
		}
		if a.Inputs != nil {
			parts := make([]string, len(a.Inputs))
			for i, p := range a.Inputs {
				parts[i] = fmt.Sprintf("%s:%d", p.Name, p.Size)
			}
			fmt.Fprintf(w, "inputs:\t%s\n", strings.Join(parts, ","))
		}
		fmt.Fprintf(w, "models:\t%s\n", list(a.Models))
		var spec bytes.Buffer
		if a.Selection != nil && json.Compact(&spec, a.Selection) == nil {
			fmt.Fprintf(w, "selection:\t%s\n", spec.Bytes())
		}
		spec.Reset()
		if a.Features != nil && json.Compact(&spec, a.Features) == nil {
			fmt.Fprintf(w, "features:\t%s (set by apps set-features)\n", spec.Bytes())
		}
	})
}

func appsCreate(c *cli, args []string) error {
	fs := c.flagSet("create")
	var a admin.App
	var slo time.Duration
	var replace bool
	fs.StringVar(&a.Name, "name", "", "the app's `name` (required)")
	fs.Func("input-type", "the `type` of the app's inputs: bytes, int32, float32, float64 or string (required)", func(s string) error {
		a.InputType = state.InputType(s)
		return nil
	})
	durationVar(fs, &slo, "slo", 0, "the latency objective, a `duration` such as 50ms (required)")
	fs.StringVar(&a.DefaultOutput, "default-output", "", "the `output` answered, flagged, when the deadline passes first")
	fs.StringVar(&a.Policy, "policy", "", "the model selection `policy`: single (the first linked model; the default), weighted, exp3 or exp4; their parameters (shares, eta, shadow, canary guard) come from the configuration file's selection block; apps select sets a policy with its parameters in place of both")
	fs.IntVar(&a.Priority, "priority", 0, "the app's `priority` when load is shed: lower is shed first")
	var cacheTTL time.Duration
	durationVar(fs, &cacheTTL, "cache-ttl", 0, "how long answers stay in the prediction cache, a `duration` such as 30m; 0 means the cache's default")
	fs.BoolVar(&a.NoCache, "no-cache", false, "keep the app's answers out of the prediction cache")
	fs.Func("inputs", "lay a numeric input out as named `parts`, in order: name:size,name:size (an OIP request then sends one tensor per part; with features, the lookup fills the part its spec's input names)", func(s string) error {
		parts, err := parseInputs(s)
		a.Inputs = parts
		return err
	})
	fs.BoolVar(&replace, "replace", false, "replace an existing app of that name instead of failing")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "name", "input-type", "slo"); err != nil {
		return err
	}
	a.SLOMillis = float64(slo) / float64(time.Millisecond)
	a.CacheTTLSeconds = cacheTTL.Seconds()
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		create := ac.CreateApp
		if replace {
			create = ac.PutApp
		}
		v, err := create(ctx, a)
		if err != nil {
			if replace {
				return withConflictHint(err, "unlink the models that take another input type first (sloproxy apps unlink APP MODEL)")
			}
			return withConflictHint(err, "pass --replace to replace it")
		}
		return c.showApp(v)
	})
}

// parseInputs reads an input layout written name:size,name:size; the
// state checks the names and sizes.
func parseInputs(s string) ([]state.InputPart, error) {
	var parts []state.InputPart
	for _, p := range strings.Split(s, ",") {
		i := strings.LastIndexByte(p, ':') // a name may hold a colon
		n, err := strconv.Atoi(strings.TrimSpace(p[i+1:]))
		if i < 0 || err != nil {
			return nil, fmt.Errorf("%q: write each part as name:size, such as dense:4", p)
		}
		parts = append(parts, state.InputPart{Name: strings.TrimSpace(p[:i]), Size: n})
	}
	return parts, nil
}

func appsDelete(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("delete"), args, "NAME")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		if err := ac.DeleteApp(ctx, pos[0]); err != nil {
			return err
		}
		c.done("deleted app %s", pos[0])
		return nil
	})
}

func appsLink(c *cli, args []string) error {
	return changeLink(c, "link", args, (*admin.Client).Link)
}

func appsUnlink(c *cli, args []string) error {
	return changeLink(c, "unlink", args, (*admin.Client).Unlink)
}

func changeLink(c *cli, verb string, args []string, change func(*admin.Client, context.Context, string, string) (admin.AppView, error)) error {
	fs := c.flagSet(verb)
	if verb == "link" {
		c.forceFlag(fs)
	}
	pos, err := c.parse(fs, args, "APP", "MODEL")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		a, err := change(ac, ctx, pos[0], pos[1])
		if err != nil {
			return withConflictHint(err, fmt.Sprintf("`sloproxy models deploy` or `sloproxy models rollback %s VERSION` sets its current version; `sloproxy models get %s` shows its input type", pos[1], pos[1]))
		}
		if c.json {
			return c.printJSON(a)
		}
		c.done("app %s uses models: %s", a.Name, list(a.Models))
		return nil
	})
}

func appsSelect(c *cli, args []string) error {
	fs := c.flagSet("select")
	c.forceFlag(fs)
	pos, err := c.parse(fs, args, "APP", "SPEC")
	if err != nil {
		return err
	}
	spec, err := specArg(pos[1], `{"policy": "weighted", "shares": {"m": 9, "m:2": 1}}`)
	if err != nil {
		return err
	}
	return c.changeApp(func(ctx context.Context, ac *admin.Client) (admin.AppView, error) {
		return ac.SetSelection(ctx, pos[0], spec)
	})
}

func appsClearSelection(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("clear-selection"), args, "APP")
	if err != nil {
		return err
	}
	return c.changeApp(func(ctx context.Context, ac *admin.Client) (admin.AppView, error) {
		return ac.ClearSelection(ctx, pos[0])
	})
}

func appsSetFeatures(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("set-features"), args, "APP", "SPEC")
	if err != nil {
		return err
	}
	spec, err := specArg(pos[1], `{"key": "user:{user_id}", "fields": [{"name": "clicks", "type": "int", "default": 0}]}`)
	if err != nil {
		return err
	}
	return c.changeApp(func(ctx context.Context, ac *admin.Client) (admin.AppView, error) {
		return ac.SetFeatures(ctx, pos[0], spec)
	})
}

func appsClearFeatures(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("clear-features"), args, "APP")
	if err != nil {
		return err
	}
	return c.changeApp(func(ctx context.Context, ac *admin.Client) (admin.AppView, error) {
		return ac.ClearFeatures(ctx, pos[0])
	})
}

// specArg reads a JSON spec given on the command line, or from a file as
// @FILE; example shows a valid one in the error for text that is not JSON.
func specArg(arg, example string) ([]byte, error) {
	spec := []byte(arg)
	if file, ok := strings.CutPrefix(arg, "@"); ok {
		var err error
		if spec, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("reading the spec: %w", err)
		}
	}
	if !json.Valid(spec) {
		return nil, fmt.Errorf("the spec is not JSON: give an object such as %s", example)
	}
	return spec, nil
}

// changeApp makes a change through the admin API and shows the app it
// answers.
func (c *cli) changeApp(change func(ctx context.Context, ac *admin.Client) (admin.AppView, error)) error {
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		a, err := change(ctx, ac)
		if err != nil {
			return err
		}
		return c.showApp(a)
	})
}

func appsFeatures(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("features"), args, "APP")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		v, err := ac.Features(ctx, pos[0])
		if err != nil {
			return err
		}
		spec, err := json.Marshal(v.Spec)
		if err != nil {
			return err
		}
		return c.show(v, func(w io.Writer) {
			fmt.Fprintf(w, "features:\t%s (from %s)\n", spec, v.Source)
		})
	})
}

func appsSelection(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("selection"), args, "APP")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		st, err := ac.Selection(ctx, pos[0])
		if err != nil {
			return err
		}
		spec, err := json.Marshal(st.Spec)
		if err != nil {
			return err
		}
		return c.show(st, func(w io.Writer) {
			fmt.Fprintf(w, "policy:\t%s\n", st.Policy)
			fmt.Fprintf(w, "spec:\t%s (from %s)\n", spec, st.Source)
			if st.Shadow != "" {
				fmt.Fprintf(w, "shadow:\t%s\n", st.Shadow)
			}
			if len(st.RolledBack) > 0 {
				fmt.Fprintf(w, "rolled back:\t%s\n", list(st.RolledBack))
			}
			for _, arm := range slices.Sorted(maps.Keys(st.Shares)) {
				fmt.Fprintf(w, "share %s:\t%.3f\n", arm, st.Shares[arm])
			}
		})
	})
}

// ---- models ----

func modelsList(c *cli, args []string) error {
	if _, err := c.parse(c.flagSet("list"), args); err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		models, err := ac.Models(ctx)
		if err != nil {
			return err
		}
		return c.show(admin.ModelList{Models: models}, func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tCURRENT\tINPUT\tVERSIONS\tAPPS")
			for _, m := range models {
				versions := make([]string, len(m.Versions))
				for i, v := range m.Versions {
					versions[i] = v.Version
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, orDash(m.CurrentVersion), m.InputType, list(versions), list(m.Apps))
			}
		})
	})
}

func modelsGet(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("get"), args, "NAME")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		m, err := ac.Model(ctx, pos[0])
		if err != nil {
			return err
		}
		return c.showModel(m)
	})
}

func (c *cli) showModel(m admin.ModelView) error {
	return c.show(m, func(w io.Writer) {
		fmt.Fprintf(w, "name:\t%s\n", m.Name)
		fmt.Fprintf(w, "current version:\t%s\n", orDash(m.CurrentVersion))
		fmt.Fprintf(w, "input type:\t%s\n", m.InputType)
		fmt.Fprintf(w, "apps:\t%s\n", list(m.Apps))
		fmt.Fprintln(w)
		fmt.Fprintln(w, "VERSION\tCURRENT\tRUNTIME\tREPLICAS (LIVE/WANTED)\tBATCH\tAUTOSCALE\tREPLICA TIME\tCOST\tCOST/1K PREDICTIONS\tSPEC")
		for _, v := range m.Versions {
			current := ""
			if v.Current {
				current = "*"
			}
			batch := "auto"
			if v.BatchSize > 0 {
				batch = strconv.Itoa(v.BatchSize)
			}
			replicaTime, cost, per1k := usageOf(v)
			fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Version, current, v.Runtime.Kind, len(v.LiveReplicas), v.Replicas, batch,
				autoscaleOf(v), replicaTime, cost, per1k, spec(v.Runtime))
		}
		for _, v := range m.Versions {
			if v.Profile != nil {
				fmt.Fprintln(w)
				printProfile(w, *v.Profile)
			}
		}
	})
}

// spec summarizes what a runtime runs.
func spec(r state.RuntimeSpec) string {
	switch r.Kind {
	case state.RuntimeProcess:
		return strings.Join(r.Command, " ")
	case state.RuntimeExternal:
		return strings.Join(r.Addresses, ",")
	case state.RuntimeDocker, state.RuntimeSwarm:
		return r.Image
	}
	return ""
}

func modelsRegister(c *cli, args []string) error {
	fs := c.flagSet("register")
	var v state.ModelVersion
	var command, addresses stringList
	var cmdLine string
	env, labels := keyValues{}, keyValues{}
	fs.StringVar(&v.Model, "name", "", "the model's `name` (required)")
	fs.StringVar(&v.Version, "version", "", "the `version`'s name (required)")
	fs.Func("input-type", "the `type` of the model's inputs: bytes, int32, float32, float64 or string (required)", func(s string) error {
		v.InputType = state.InputType(s)
		return nil
	})
	fs.Func("runtime", "how replicas run: process, external, docker or swarm (default process)", func(s string) error {
		v.Runtime.Kind = state.RuntimeKind(s)
		return nil
	})
	fs.Var(&command, "command", "process: one `argument` of the command line; repeat for each, in order")
	fs.StringVar(&cmdLine, "cmd", "", "process: the command `line`, split on spaces (no quoting); instead of --command")
	fs.Var(env, "env", "process: an environment variable, `KEY=VALUE`; repeatable")
	fs.Var(&addresses, "address", "external: a replica's `host:port`; repeatable")
	fs.StringVar(&v.Runtime.Image, "image", "", "docker and swarm: the `image`")
	fs.IntVar(&v.Replicas, "replicas", 1, "the desired number of replicas")
	fs.IntVar(&v.BatchSize, "batch-size", 0, "the largest batch; 0 leaves it to the batching controller")
	fs.Var(labels, "label", "an annotation, `KEY=VALUE`; repeatable")
	exampleInputFlag(fs, &v)
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "name", "version", "input-type"); err != nil {
		return err
	}
	if v.Runtime.Kind == "" {
		v.Runtime.Kind = state.RuntimeProcess
	}
	switch {
	case cmdLine != "" && len(command) > 0:
		return errors.New("--cmd and --command: give one, not both")
	case cmdLine != "":
		v.Runtime.Command = strings.Fields(cmdLine)
	default:
		v.Runtime.Command = command
	}
	v.Runtime.Addresses = addresses
	v.Runtime.Env = env
	v.Labels = labels
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		m, err := ac.RegisterVersion(ctx, v)
		if err != nil {
			return withConflictHint(err, fmt.Sprintf("register another --version, or change the replica count with `sloproxy models scale %s %s N`", v.Model, v.Version))
		}
		if c.json {
			return c.printJSON(m)
		}
		c.done("registered model %s version %s", m.Name, v.Version)
		if m.CurrentVersion != v.Version {
			c.done("the current version is still %s: `sloproxy models rollback %s %s` makes it current", m.CurrentVersion, m.Name, v.Version)
		}
		return nil
	})
}

func modelsRollback(c *cli, args []string) error {
	fs := c.flagSet("rollback")
	c.forceFlag(fs)
	pos, err := c.parse(fs, args, "NAME", "VERSION")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		m, err := ac.SetCurrent(ctx, pos[0], pos[1])
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(m)
		}
		c.done("model %s: current version %s", m.Name, m.CurrentVersion)
		return nil
	})
}

func modelsScale(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("scale"), args, "NAME", "VERSION", "N")
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(pos[2])
	if err != nil {
		return fmt.Errorf("replica count %q: not a number", pos[2])
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		m, err := ac.SetReplicas(ctx, pos[0], pos[1], n)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(m)
		}
		v, _ := m.Version(pos[1])
		c.done("model %s version %s: %s wanted, %d live", m.Name, v.Version, plural(v.Replicas, "replica"), len(v.LiveReplicas))
		return nil
	})
}

func modelsDeleteVersion(c *cli, args []string) error {
	pos, err := c.parse(c.flagSet("delete-version"), args, "NAME", "VERSION")
	if err != nil {
		return err
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		if err := ac.DeleteVersion(ctx, pos[0], pos[1]); err != nil {
			return withConflictHint(err, fmt.Sprintf("make another version current with `sloproxy models rollback %s VERSION`, or unlink the apps with `sloproxy apps unlink APP %s`", pos[0], pos[0]))
		}
		c.done("deleted model %s version %s", pos[0], pos[1])
		return nil
	})
}

// ---- helpers ----

// required fails naming the first of the flags that was not given.
func required(fs *flag.FlagSet, names ...string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, n := range names {
		if !set[n] {
			return fmt.Errorf("%s: --%s is required", fs.Name(), n)
		}
	}
	return nil
}

// list joins names for a table cell.
func list(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// keyValues is a repeatable KEY=VALUE flag.
type keyValues map[string]string

func (kv keyValues) String() string {
	var parts []string
	for k, v := range kv {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

func (kv keyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	kv[k] = v
	return nil
}
