package selection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/internal/jsonstrict"
)

// specJSON is a Spec's JSON form: the body of the admin API's
// PUT /api/v1/apps/{app}/selection, and what the shared state keeps of it.
// Its fields are the configuration file's selection block, with the
// policy's name beside them and the guard's window in seconds.
type specJSON struct {
	Policy string             `json:"policy"`
	Output Output             `json:"output,omitempty"`
	Shares map[string]float64 `json:"shares,omitempty"`
	Eta    float64            `json:"eta,omitempty"`
	Gamma  float64            `json:"gamma,omitempty"`
	Gap    float64            `json:"gap,omitempty"`
	Shadow string             `json:"shadow,omitempty"`
	Guard  *guardJSON         `json:"guard,omitempty"`
	Seed   uint64             `json:"seed,omitempty"`
}

type guardJSON struct {
	Canary        string  `json:"canary"`
	WindowS       float64 `json:"window_s,omitempty"`
	MinQueries    int     `json:"min_queries,omitempty"`
	MinAttainment float64 `json:"min_attainment,omitempty"`
	MaxErrorRate  float64 `json:"max_error_rate,omitempty"`
}

// ParseSpec reads a Spec from its JSON form and validates it. Unknown
// fields are errors, so that a misspelt one is not ignored.
func ParseSpec(raw []byte) (Spec, error) {
	var s Spec
	if err := s.UnmarshalJSON(raw); err != nil {
		return Spec{}, err
	}
	if s.Policy == "" {
		return Spec{}, fmt.Errorf("no \"policy\"")
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// UnmarshalJSON reads s from its JSON form, refusing unknown fields; it
// does not validate it (ParseSpec does).
func (s *Spec) UnmarshalJSON(raw []byte) error {
	var j specJSON
	if err := jsonstrict.Decode(bytes.NewReader(raw), &j); err != nil {
		return fmt.Errorf("not a selection spec: %w", err)
	}
	*s = Spec{Policy: j.Policy, Output: j.Output, Shares: j.Shares, Eta: j.Eta, Gamma: j.Gamma, Gap: j.Gap, Shadow: j.Shadow, Seed: j.Seed}
	if g := j.Guard; g != nil {
		if g.Canary == "" {
			return fmt.Errorf("guard.canary: required with a guard")
		}
		if !(g.WindowS >= 0 && g.WindowS <= 86400) {
			return fmt.Errorf("guard.window_s %v: must be within [0, 86400]", g.WindowS)
		}
		s.Guard = Guard{Canary: g.Canary, Window: time.Duration(g.WindowS * float64(time.Second)), MinQueries: g.MinQueries,
			MinAttainment: g.MinAttainment, MaxErrorRate: g.MaxErrorRate}
	}
	return nil
}

// MarshalJSON writes s in the form ParseSpec reads.
func (s Spec) MarshalJSON() ([]byte, error) {
	j := specJSON{Policy: s.Policy, Output: s.Output, Shares: s.Shares, Eta: s.Eta, Gamma: s.Gamma, Gap: s.Gap, Shadow: s.Shadow, Seed: s.Seed}
	if g := s.Guard; g.Canary != "" {
		j.Guard = &guardJSON{Canary: g.Canary, WindowS: g.Window.Seconds(), MinQueries: g.MinQueries,
			MinAttainment: g.MinAttainment, MaxErrorRate: g.MaxErrorRate}
	}
	return json.Marshal(j)
}

// CheckArms names the first arm of s (a share, the shadow) whose model is
// not among models, the models linked to the app.
func (s Spec) CheckArms(models []string) error {
	linked := func(arm string) bool {
		model, _, _ := strings.Cut(arm, ":")
		return slices.Contains(models, model)
	}
	for _, arm := range slices.Sorted(maps.Keys(s.Shares)) {
		if !linked(arm) {
			return fmt.Errorf("shares[%q]: model not in the app's models", arm)
		}
	}
	if s.Shadow != "" && !linked(s.Shadow) {
		return fmt.Errorf("shadow %q: model not in the app's models", s.Shadow)
	}
	return nil
}
