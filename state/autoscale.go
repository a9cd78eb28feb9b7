package state

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Autoscale lets the autoscaler (package autoscale) set a model version's
// replica count from its demand, between Min and Max. A version without
// one keeps the count someone set.
type Autoscale struct {
	// Min and Max bound the replica count; 1 ≤ Min ≤ Max. Max is also
	// bounded by the proxy's limits.max_replicas, which the admin API and
	// the configuration check.
	Min int `json:"min"`
	Max int `json:"max"`
	// Target is the share of the replicas' capacity at the SLO that the
	// demand may use, in (0, 1]. 0 means DefaultTarget.
	Target float64 `json:"target,omitempty"`
	// ScaleDownDelay is how long a lower count must have sufficed before
	// the autoscaler scales down to it. 0 means DefaultScaleDownDelay. In
	// JSON it is "scale_down_delay_s", a number of seconds that may have
	// a fraction.
	ScaleDownDelay time.Duration `json:"-"`
}

// The autoscaler's defaults for Autoscale's zero fields.
const (
	// DefaultTarget keeps a fifth of the capacity at the SLO spare for
	// the load's bursts and for the time a new replica takes to start.
	DefaultTarget = 0.8
	// DefaultScaleDownDelay outlasts the lulls of a steady load, so that
	// one quiet spell does not stop replicas the next second needs.
	DefaultScaleDownDelay = 15 * time.Second
)

// maxScaleDownDelay bounds the scale-down delay: anything longer is surely
// a unit mistake.
const maxScaleDownDelay = 24 * time.Hour

// TargetOrDefault is Target, or DefaultTarget when it is 0.
func (a Autoscale) TargetOrDefault() float64 {
	if a.Target == 0 {
		return DefaultTarget
	}
	return a.Target
}

// DelayOrDefault is ScaleDownDelay, or DefaultScaleDownDelay when it is 0.
func (a Autoscale) DelayOrDefault() time.Duration {
	if a.ScaleDownDelay == 0 {
		return DefaultScaleDownDelay
	}
	return a.ScaleDownDelay
}

// Clamp is n within [Min, Max].
func (a Autoscale) Clamp(n int) int { return max(a.Min, min(a.Max, n)) }

// check validates a's fields, naming the first that is wrong.
func (a Autoscale) check() error {
	switch {
	case a.Min < 1:
		return fmt.Errorf("autoscale.min %d: must be at least 1", a.Min)
	case a.Max < a.Min:
		return fmt.Errorf("autoscale.max %d: must be at least autoscale.min (%d)", a.Max, a.Min)
	case !(a.Target >= 0 && a.Target <= 1): // NaN fails
		return fmt.Errorf("autoscale.target %g: must be in (0, 1] (0 means %g)", a.Target, DefaultTarget)
	case a.ScaleDownDelay < 0 || a.ScaleDownDelay > maxScaleDownDelay:
		return fmt.Errorf("autoscale.scale_down_delay %v: must be between 0 (%v) and %v", a.ScaleDownDelay, DefaultScaleDownDelay, maxScaleDownDelay)
	}
	return nil
}

// autoscaleJSON is Autoscale's wire form: the delay as fractional seconds.
type autoscaleJSON struct {
	autoscaleFields
	DelaySeconds float64 `json:"scale_down_delay_s,omitempty"`
}

// autoscaleFields has Autoscale's fields without its methods, so encoding
// them does not recurse into Autoscale.MarshalJSON.
type autoscaleFields Autoscale

// MarshalJSON encodes the delay as "scale_down_delay_s".
func (a Autoscale) MarshalJSON() ([]byte, error) {
	return json.Marshal(autoscaleJSON{autoscaleFields: autoscaleFields(a), DelaySeconds: a.ScaleDownDelay.Seconds()})
}

// UnmarshalJSON decodes "scale_down_delay_s", rounded to the nanosecond.
func (a *Autoscale) UnmarshalJSON(b []byte) error {
	var j autoscaleJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = Autoscale(j.autoscaleFields)
	a.ScaleDownDelay = roundDuration(j.DelaySeconds, time.Second)
	return nil
}

// ScaleVersion sets the desired replica count of a model version, in one
// read-modify-write of the stored document, so that it changes nothing
// else of the version's spec: the admin API's scaling and the
// autoscaler's both come through here.
func (s *Store) ScaleVersion(ctx context.Context, model, version string, replicas int) error {
	if replicas < 1 {
		return invalid("model %q version %q: replicas %d: must be at least 1", model, version, replicas)
	}
	return s.update(ctx, func(d *Data) error {
		v, err := d.version(model, version)
		if err != nil {
			return err
		}
		if v.Replicas == replicas {
			return errNoChange
		}
		v.Replicas = replicas
		return d.putVersion(v)
	})
}

// SetAutoscale sets (nil: clears) the autoscaling of a model version, in
// one read-modify-write of the stored document. A version that gets one
// has its replica count brought within its bounds.
func (s *Store) SetAutoscale(ctx context.Context, model, version string, a *Autoscale) error {
	if a != nil {
		if err := a.check(); err != nil {
			return invalid("model %q version %q: %v", model, version, err)
		}
		a = new(*a)
	}
	return s.update(ctx, func(d *Data) error {
		v, err := d.version(model, version)
		if err != nil {
			return err
		}
		v.Autoscale = a
		if a != nil {
			v.Replicas = a.Clamp(v.Replicas)
		}
		return d.putVersion(v)
	})
}

// version returns the version of model named version.
func (d *Data) version(model, version string) (ModelVersion, error) {
	m, ok := d.Models[model]
	if !ok {
		return ModelVersion{}, notFound("model %q", model)
	}
	v, ok := m.Version(version)
	if !ok {
		return ModelVersion{}, notFound("model %q version %q", model, version)
	}
	return v, nil
}

// roundDuration is a JSON number of unit (such as time.Second) as a
// Duration, rounded to the nanosecond; one out of range (2^63 ns and up,
// below -2^63 ns) or NaN becomes the largest Duration, which validation
// refuses as too large.
func roundDuration(x float64, unit time.Duration) time.Duration {
	ns := math.Round(x * float64(unit))
	if ns >= math.MaxInt64 || ns < math.MinInt64 || math.IsNaN(ns) {
		return math.MaxInt64
	}
	return time.Duration(ns)
}
