package main

// `sloproxy models autoscale`, and how `models get` shows autoscaling and
// cost.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/state"
)

func modelsAutoscale(c *cli, args []string) error {
	fs := c.flagSet("autoscale")
	var a state.Autoscale
	fs.IntVar(&a.Min, "min", 1, "the fewest `replicas`")
	fs.IntVar(&a.Max, "max", 0, "the most `replicas` (required unless --off), at most the proxy's limits.max_replicas")
	fs.Float64Var(&a.Target, "target", state.DefaultTarget, "the share of the replicas' capacity at the SLO the demand may use, in (0, 1]")
	durationVar(fs, &a.ScaleDownDelay, "scale-down-delay", state.DefaultScaleDownDelay, "how long fewer replicas must have sufficed before scaling down, a `duration`")
	off := fs.Bool("off", false, "turn autoscaling off; the replica count stays where it is")
	pos, err := c.parse(fs, args, "NAME", "VERSION")
	if err != nil {
		return err
	}
	set := &a
	switch {
	case *off:
		set = nil
	case a.Max == 0:
		return errors.New("--max: required (or --off)")
	case !(a.Target > 0 && a.Target <= 1): // the API reads 0 as the default
		return fmt.Errorf("--target %g: must be in (0, 1]", a.Target)
	}
	return c.call(func(ctx context.Context, ac *admin.Client) error {
		m, err := ac.SetAutoscale(ctx, pos[0], pos[1], set)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(m)
		}
		v, _ := m.Version(pos[1])
		c.done("model %s version %s: autoscaling %s; %s wanted, %d live", m.Name, v.Version, autoscaleOf(v), plural(v.Replicas, "replica"), len(v.LiveReplicas))
		return nil
	})
}

// autoscaleOf summarizes a version's autoscaling: "-" when off.
func autoscaleOf(v admin.VersionView) string {
	a := v.Autoscale
	if a == nil {
		return "-"
	}
	return fmt.Sprintf("%d-%d at %g, down after %v", a.Min, a.Max, a.TargetOrDefault(), a.DelayOrDefault())
}

// usageOf summarizes what a version used: replica-seconds, cost, cost
// per 1,000 predictions; "-" for what the proxy did not count.
func usageOf(v admin.VersionView) (replicaTime, cost, per1k string) {
	u := v.Usage
	if u == nil {
		return "-", "-", "-"
	}
	per1k = "-"
	if u.CostPer1kPredictions != nil {
		per1k = fmt.Sprintf("%.6g", *u.CostPer1kPredictions)
	}
	return (time.Duration(u.ReplicaSeconds) * time.Second).String(), fmt.Sprintf("%.6g", u.Cost), per1k
}
