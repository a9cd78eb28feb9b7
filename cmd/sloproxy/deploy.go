package main

// `sloproxy models deploy`: register a docker model version, follow its
// replicas as they come up, and move traffic to it once all are ready.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"

	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/state"
)

// deployPoll is how often deploy asks the admin API how far the replicas got.
const deployPoll = 250 * time.Millisecond

func modelsDeploy(c *cli, args []string) error {
	fs := c.flagSet("deploy")
	v := state.ModelVersion{Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker}}
	env, labels := keyValues{}, keyValues{}
	var gpus, memory string
	var wait time.Duration
	var noSwitch bool
	fs.StringVar(&v.Model, "name", "", "the model's `name` (required)")
	fs.StringVar(&v.Version, "version", "", "the `version`'s name (required)")
	fs.StringVar(&v.Runtime.Image, "image", "", "the Docker `image`, present on the Engine (required; there is no pulling)")
	fs.Func("input-type", "the `type` of the model's inputs: bytes, int32, float32, float64 or string (required)", func(s string) error {
		v.InputType = state.InputType(s)
		return nil
	})
	fs.IntVar(&v.Replicas, "replicas", 1, "the number of replicas")
	fs.StringVar(&gpus, "gpus", "", "GPUs for each container, as docker run --gpus: `all`, a count, or device=ID[,ID...]")
	fs.Float64Var(&v.Runtime.CPUs, "cpus", 0, "CPU limit of each container, such as 1.5; 0 means none")
	fs.StringVar(&memory, "memory", "", "memory limit of each container, such as 512m or 2g; empty means none")
	fs.Var(env, "env", "an environment variable of the containers, `KEY=VALUE`; repeatable")
	fs.IntVar(&v.BatchSize, "batch-size", 0, "the largest batch; 0 leaves it to the batching controller")
	fs.Var(labels, "label", "an annotation, `KEY=VALUE`; repeatable")
	durationVar(fs, &wait, "wait", 5*time.Minute, "how long to wait for the replicas to be ready, a `duration`")
	fs.BoolVar(&noSwitch, "no-switch", false, "leave the current version as it is once the replicas are ready")
	exampleInputFlag(fs, &v)
	c.forceFlag(fs)
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "name", "version", "image", "input-type"); err != nil {
		return err
	}
	var err error
	if v.Runtime.GPUs, v.Runtime.DeviceIDs, err = parseGPUs(gpus); err != nil {
		return err
	}
	if memory != "" {
		if v.Runtime.MemoryBytes, err = units.RAMInBytes(memory); err != nil {
			return fmt.Errorf("--memory %q: %w", memory, err)
		}
	}
	if len(env) > 0 {
		v.Runtime.Env = env
	}
	if len(labels) > 0 {
		v.Labels = labels
	}
	ac, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := ac.RegisterVersion(ctx, v)
	if err != nil {
		return withConflictHint(err, fmt.Sprintf("deploy another --version, or change the replica count with `sloproxy models scale %s %s N`", v.Model, v.Version))
	}
	c.done("registered model %s version %s (image %s); waiting for %s", v.Model, v.Version, v.Runtime.Image, plural(v.Replicas, "replica"))
	if err := c.waitReady(ctx, ac, v, wait); err != nil {
		return err
	}
	if !noSwitch && m.CurrentVersion != v.Version {
		previous := m.CurrentVersion
		if m, err = ac.SetCurrent(ctx, v.Model, v.Version); err != nil {
			return err
		}
		if previous == "" {
			c.done("traffic moved to version %s", v.Version)
		} else {
			c.done("traffic moved to version %s; roll back with: sloproxy models rollback %s %s", v.Version, v.Model, previous)
		}
	}
	if c.json {
		return c.printJSON(m)
	}
	c.done("model %s: current version %s", m.Name, m.CurrentVersion)
	return nil
}

// waitReady prints the version's ready replicas as they change until all
// are ready; it fails when the runtime reports a problem or ctx ends.
func (c *cli) waitReady(ctx context.Context, ac *admin.Client, v state.ModelVersion, wait time.Duration) error {
	tick := time.NewTicker(deployPoll)
	defer tick.Stop()
	last := -1
	for {
		m, err := ac.Model(ctx, v.Model)
		if err != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return err
		}
		vv, ok := m.Version(v.Version)
		if err == nil && !ok {
			return fmt.Errorf("model %s version %s: deleted while deploying", v.Model, v.Version)
		}
		if vv.Problem != "" {
			return fmt.Errorf("model %s version %s cannot run: %s\n(the version stays registered: fix it, then `sloproxy models delete-version %s %s` and deploy again)",
				v.Model, v.Version, vv.Problem, v.Model, v.Version)
		}
		if live := len(vv.LiveReplicas); live != last && err == nil {
			c.done("  %d/%d replicas ready", live, vv.Replicas)
			last = live
			if live >= vv.Replicas {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("model %s version %s: not ready within %v (%d/%d replicas ready); `sloproxy models get %s` shows its state",
				v.Model, v.Version, wait, max(last, 0), v.Replicas, v.Model)
		case <-tick.C:
		}
	}
}

// parseGPUs reads --gpus as docker run does: "" none, "all", a count, or
// device=ID[,ID...].
func parseGPUs(s string) (count int, ids []string, err error) {
	switch {
	case s == "":
		return 0, nil, nil
	case s == "all":
		return -1, nil, nil
	case strings.HasPrefix(s, "device="):
		ids = strings.Split(strings.TrimPrefix(s, "device="), ",")
		if slices.Contains(ids, "") {
			return 0, nil, fmt.Errorf("--gpus %q: an empty device id", s)
		}
		return 0, ids, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, nil, fmt.Errorf("--gpus %q: want all, a positive count or device=ID[,ID...]", s)
	}
	return n, nil, nil
}
