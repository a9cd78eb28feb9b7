package config

import (
	"fmt"
	"time"

	"github.com/sloproxy/sloproxy/autoscale"
	"github.com/sloproxy/sloproxy/state"
)

// Autoscaler configures the autoscaler of this proxy (package autoscale).
type Autoscaler struct {
	// Enabled makes this proxy decide and write the replica counts of
	// the autoscaled versions. Each proxy decides from the demand that
	// reaches it, so with several proxies on one Redis enable it on one:
	// two would undo each other's decisions. Off, the proxy still counts
	// replica time and cost.
	Enabled bool `yaml:"enabled"`
}

// Cost prices a replica: what the autoscaler turns replica-seconds into
// (sloproxy_cost_total, sloproxy_cost_per_1k_predictions), and what the
// admin API and `sloproxy bench` report.
type Cost struct {
	// ReplicaHour is the price of one replica running for an hour, in
	// whatever currency the operator counts in. 0 means free; it must not
	// be negative.
	ReplicaHour float64 `yaml:"replica_hour"`
}

// check refuses a negative or not-a-number price, naming field.
func (c Cost) check(field string) error {
	if !(c.ReplicaHour >= 0) {
		return fmt.Errorf("%s.replica_hour %g: must not be negative", field, c.ReplicaHour)
	}
	return nil
}

// Autoscale is a model's `autoscale:` block: the autoscaler sets its
// replica count from the demand, within [min, max] (see package
// autoscale and state.Autoscale).
type Autoscale struct {
	// Min is the fewest replicas; 0 means 1.
	Min int `yaml:"min"`
	// Max is the most replicas; required, at least Min and at most
	// limits.max_replicas.
	Max int `yaml:"max"`
	// Target is the share of the replicas' capacity at the SLO the
	// demand may use, in (0, 1]; unset or 0 means state.DefaultTarget.
	Target float64 `yaml:"target"`
	// ScaleDownDelay is how long fewer replicas must have sufficed before
	// it scales down; unset or 0 means state.DefaultScaleDownDelay.
	ScaleDownDelay time.Duration `yaml:"scale_down_delay"`
}

// State is a's state form.
func (a Autoscale) State() *state.Autoscale {
	return &state.Autoscale{Min: max(1, a.Min), Max: a.Max, Target: a.Target, ScaleDownDelay: a.ScaleDownDelay}
}

// check validates what the state's own check (run by
// state.ModelVersion.Validate on a.State()) cannot see: a negative min,
// which State raises to 1; and the replica limit. It names the field at
// fault.
func (a Autoscale) check(maxReplicas int) error {
	switch {
	case a.Min < 0:
		return fmt.Errorf("autoscale.min %d: must be at least 1", a.Min)
	case a.Max > maxReplicas:
		return fmt.Errorf("autoscale.max %d: above limits.max_replicas (%d)", a.Max, maxReplicas)
	}
	return nil
}

// validateCosts checks every price in the file.
func (c *Config) validateCosts() error {
	if err := c.Runtimes.Process.Cost.check("runtimes.process.cost"); err != nil {
		return err
	}
	if err := c.Runtimes.Docker.Cost.check("runtimes.docker.cost"); err != nil {
		return err
	}
	if err := c.Runtimes.Swarm.Cost.check("runtimes.swarm.cost"); err != nil {
		return err
	}
	for i, m := range c.Models {
		if m.Cost != nil {
			if err := m.Cost.check(fmt.Sprintf("models[%d].cost", i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pricing is the file's prices per replica-hour, by runtime and by model.
// A model's price applies to all of its versions, those registered
// through the admin API included.
func (c *Config) Pricing() autoscale.Pricing {
	p := autoscale.Pricing{
		Runtime: map[state.RuntimeKind]float64{
			state.RuntimeProcess: c.Runtimes.Process.Cost.ReplicaHour,
			state.RuntimeDocker:  c.Runtimes.Docker.Cost.ReplicaHour,
			state.RuntimeSwarm:   c.Runtimes.Swarm.Cost.ReplicaHour,
		},
		Model: map[string]float64{},
	}
	for _, m := range c.Models {
		if m.Cost != nil {
			p.Model[m.Name] = m.Cost.ReplicaHour
		}
	}
	return p
}
