package state

import (
	"context"
	"encoding/json"
	"math"
	"time"
)

// Profile is what profiling measured of a model version's replicas before
// it took traffic (see containers/profile): per batch size, the latency and
// throughput of the batches sent, and the line latency(n) ≈ A + B·n fitted
// to them. It is stored with the version, replaced by the next profile,
// and deleted with the version. Durations are fractional milliseconds in
// JSON ("p99_ms").
type Profile struct {
	// At is when the profile was taken.
	At time.Time
	// Replicas is how many replicas were driven, all at once.
	Replicas int
	// Input says where the inputs came from: "request" (given with the
	// profile request), "example" (the version's ExampleInput) or "empty"
	// (neither: one empty item, which a model may refuse; see ItemErrors).
	Input string
	// ItemErrors counts the items the model answered with an error; when
	// it is not zero the latencies may not be those of real work.
	ItemErrors int
	// A and B are the fixed cost of a batch and the cost per item, fitted
	// to the lines' fastest batches: the model's own cost on these
	// replicas, which interference (a busy processor, a collector's
	// pause) only adds to.
	A, B time.Duration
	// Tail is the largest excess of a line's p99 over the fitted line:
	// what a planner adds to A + B·n to cover the slow batches.
	Tail time.Duration
	// Lines has one entry per batch size profiled, smallest first.
	Lines []ProfileLine
}

// ProfileLine is what the batches of one size measured.
type ProfileLine struct {
	// Batch is the number of items in each batch.
	Batch int
	// Samples is how many batches of this size were timed, over every
	// replica.
	Samples int
	// Min, P50 and P99 are the fastest, the median and the 99th
	// percentile of their latency, as the proxy measures it (the RPC round
	// trip). With fewer than 100 samples P99 is the slowest.
	Min, P50, P99 time.Duration
	// Throughput is the predictions per second of one replica sending
	// batches of this size one after another: Batch over the mean latency.
	Throughput float64
}

// Line returns the line for batch size n.
func (p Profile) Line(n int) (ProfileLine, bool) {
	for _, l := range p.Lines {
		if l.Batch == n {
			return l, true
		}
	}
	return ProfileLine{}, false
}

// Largest is the largest batch size, at most limit, whose planned latency
// A + B·n + Tail fits within slo, and 0 when not even one item does.
func (p Profile) Largest(slo time.Duration, limit int) int {
	left := (slo - p.A - p.Tail).Seconds()
	b := p.B.Seconds()
	switch {
	case left < b || left <= 0:
		return 0
	case b <= 0:
		return limit
	}
	return int(min(float64(limit), math.Floor(left/b)))
}

// profileJSON and lineJSON are the wire forms: durations as fractional
// milliseconds.
type profileJSON struct {
	At         time.Time     `json:"at"`
	Replicas   int           `json:"replicas"`
	Input      string        `json:"input"`
	ItemErrors int           `json:"item_errors,omitempty"`
	AMillis    float64       `json:"a_ms"`
	BMillis    float64       `json:"b_ms"`
	TailMillis float64       `json:"tail_ms"`
	Lines      []ProfileLine `json:"lines"`
}

type lineJSON struct {
	Batch      int     `json:"batch"`
	Samples    int     `json:"samples"`
	MinMillis  float64 `json:"min_ms"`
	P50Millis  float64 `json:"p50_ms"`
	P99Millis  float64 `json:"p99_ms"`
	Throughput float64 `json:"throughput"`
}

// MarshalJSON encodes durations as fractional milliseconds.
func (p Profile) MarshalJSON() ([]byte, error) {
	return json.Marshal(profileJSON{At: p.At, Replicas: p.Replicas, Input: p.Input, ItemErrors: p.ItemErrors,
		AMillis: millis(p.A), BMillis: millis(p.B), TailMillis: millis(p.Tail), Lines: p.Lines})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (p *Profile) UnmarshalJSON(b []byte) error {
	var j profileJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = Profile{At: j.At, Replicas: j.Replicas, Input: j.Input, ItemErrors: j.ItemErrors,
		A: roundDuration(j.AMillis, time.Millisecond), B: roundDuration(j.BMillis, time.Millisecond), Tail: roundDuration(j.TailMillis, time.Millisecond), Lines: j.Lines}
	return nil
}

// MarshalJSON encodes durations as fractional milliseconds.
func (l ProfileLine) MarshalJSON() ([]byte, error) {
	return json.Marshal(lineJSON{Batch: l.Batch, Samples: l.Samples, MinMillis: millis(l.Min), P50Millis: millis(l.P50), P99Millis: millis(l.P99),
		Throughput: l.Throughput})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (l *ProfileLine) UnmarshalJSON(b []byte) error {
	var j lineJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = ProfileLine{Batch: j.Batch, Samples: j.Samples, Min: roundDuration(j.MinMillis, time.Millisecond), P50: roundDuration(j.P50Millis, time.Millisecond), P99: roundDuration(j.P99Millis, time.Millisecond),
		Throughput: j.Throughput}
	return nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// SetProfile stores p as the profile of version of model, replacing the
// one it had.
func (s *Store) SetProfile(ctx context.Context, model, version string, p Profile) error {
	return s.update(ctx, func(d *Data) error { return d.setProfile(model, version, p) })
}

func (d *Data) setProfile(model, version string, p Profile) error {
	if _, err := d.version(model, version); err != nil {
		return err
	}
	if d.Profiles == nil {
		d.Profiles = make(map[string]map[string]Profile)
	}
	if d.Profiles[model] == nil {
		d.Profiles[model] = make(map[string]Profile)
	}
	d.Profiles[model][version] = p
	return nil
}

// deleteProfile forgets the profile of version of model, if any.
func (d *Data) deleteProfile(model, version string) {
	if byVersion := d.Profiles[model]; byVersion != nil {
		delete(byVersion, version)
		if len(byVersion) == 0 {
			delete(d.Profiles, model)
		}
	}
}

// Profile returns the stored profile of version v of model.
func (s *Snapshot) Profile(model, v string) (Profile, bool) {
	if s.data == nil {
		return Profile{}, false
	}
	p, ok := s.data.Profiles[model][v]
	return p, ok
}
