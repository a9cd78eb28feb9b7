package selection

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Choice is what a policy chose for one query.
type Choice struct {
	// Arms are asked for the answer; with several, their answers combine.
	Arms []string
	// Probs[i] is the probability with which Arms[i] was chosen, the
	// importance weight of its feedback.
	Probs []float64
	// Weights[i] is Arms[i]'s weight when answers combine; nil means
	// equal.
	Weights []float64
	// Among are the arms the choice was made from, when the policy
	// learns from feedback on some of them: the others' weights take part
	// in the update, so they stay comparable.
	Among []string
	// Shadow, when not empty, is an arm that gets a copy of the query: its
	// answer is recorded and compared, never returned.
	Shadow string
}

// Policy chooses the arms that answer a query and learns from feedback.
// Implementations are safe for concurrent use.
type Policy interface {
	// Choose picks among arms, the models linked to the app, for one
	// query. It never fails: when the shared state cannot be read it
	// falls back on what needs none (equal weights) and counts the error.
	Choose(ctx context.Context, arms []string) Choice
	// Feedback learns from the gains, in [0, 1], of c's arms: gains[i] is
	// Arms[i]'s, NaN for an arm that did not answer.
	Feedback(ctx context.Context, c Choice, gains []float64) error
}

// Observer learns whether arms answer within the SLO; policies that guard
// a canary implement it.
type Observer interface {
	// Observe records one answer of arm at now: within its SLO or not,
	// and whether the arm failed (an error rather than lateness).
	Observe(arm string, now time.Time, within, failed bool)
}

// The policies' names, as an app's policy field spells them.
const (
	NameSingle   = "single"
	NameWeighted = "weighted"
	NameExp3     = "exp3"
	NameExp4     = "exp4"
)

// ValidName reports whether name names a policy; empty means single.
func ValidName(name string) bool {
	switch name {
	case "", NameSingle, NameWeighted, NameExp3, NameExp4:
		return true
	}
	return false
}

// Defaults of Spec's fields.
const (
	DefaultEta   = 0.1
	DefaultGamma = 0.1
	DefaultGap   = 5.0
	// DefaultEnsembleEta is exp4's learning rate: higher than exp3's,
	// since every model is scored on every query rather than one model
	// on a query through an importance weight.
	DefaultEnsembleEta = 1.0
)

// Spec configures an app's policy. The zero value is Single.
type Spec struct {
	// Policy is single, weighted, exp3 or exp4; empty means single.
	Policy string
	// Output is label, number or probabilities; empty means label.
	Output Output
	// Shares are weighted's traffic shares by arm (a model, or
	// model:version); they need not sum to 1.
	Shares map[string]float64
	// Eta is exp3's and exp4's learning rate; 0 means DefaultEta for
	// exp3, DefaultEnsembleEta for exp4.
	Eta float64
	// Gamma is exp3's share of uniform exploration; 0 means DefaultGamma.
	Gamma float64
	// Gap bounds how far an arm's log-weight falls below the best one's;
	// 0 means DefaultGap.
	Gap float64
	// Shadow, when set, is an arm that gets a copy of every query.
	Shadow string
	// Guard, with a Canary, rolls weighted's canary back when it misses
	// the SLO or fails.
	Guard Guard
	// Seed seeds the policy's random choices; 0 means a random seed.
	Seed uint64
}

// Guard watches a weighted policy's canary arm over a rolling window.
type Guard struct {
	// Canary is the arm watched; empty means no guard.
	Canary string
	// Window is the span over which attainment and errors are counted;
	// 0 means a minute.
	Window time.Duration
	// MinQueries is how many of the canary's answers the window needs
	// before it judges; 0 means 20.
	MinQueries int
	// MinAttainment rolls the canary back when the fraction of its
	// answers within the SLO falls below it; 0 means never.
	MinAttainment float64
	// MaxErrorRate rolls the canary back when the fraction of its answers
	// that failed rises above it; 0 means never.
	MaxErrorRate float64
}

// withDefaults fills in s's defaults.
func (s Spec) withDefaults() Spec {
	if s.Policy == "" {
		s.Policy = NameSingle
	}
	if s.Output == "" {
		s.Output = Label
	}
	if s.Eta == 0 {
		s.Eta = DefaultEta
		if s.Policy == NameExp4 {
			s.Eta = DefaultEnsembleEta
		}
	}
	if s.Gamma == 0 {
		s.Gamma = DefaultGamma
	}
	if s.Gap == 0 {
		s.Gap = DefaultGap
	}
	if s.Guard.Window == 0 {
		s.Guard.Window = time.Minute
	}
	if s.Guard.MinQueries == 0 {
		s.Guard.MinQueries = 20
	}
	return s
}

// Validate names the first problem of s.
func (s Spec) Validate() error {
	s = s.withDefaults()
	switch s.Policy {
	case NameSingle, NameExp3, NameExp4:
		if len(s.Shares) > 0 || s.Guard.Canary != "" {
			return fmt.Errorf("shares and guard are weighted's; policy %q takes none", s.Policy)
		}
	case NameWeighted:
		if len(s.Shares) == 0 {
			return fmt.Errorf("weighted needs shares")
		}
		total := 0.0
		for arm, v := range s.Shares {
			if !(v >= 0) || math.IsInf(v, 1) {
				return fmt.Errorf("shares[%q] %v: must be a finite number, 0 or more", arm, v)
			}
			total += v
		}
		if total <= 0 {
			return fmt.Errorf("shares: at least one must be positive")
		}
		if c := s.Guard.Canary; c != "" {
			if _, ok := s.Shares[c]; !ok {
				return fmt.Errorf("guard.canary %q: not one of the shares' arms", c)
			}
			if len(s.Shares) < 2 {
				return fmt.Errorf("guard.canary %q: there is no other arm to roll back to", c)
			}
		}
	default:
		return fmt.Errorf("policy %q: must be single, weighted, exp3 or exp4", s.Policy)
	}
	switch {
	case s.Output != Label && s.Output != Number && s.Output != Probabilities:
		return fmt.Errorf("output %q: must be label, number or probabilities", s.Output)
	case !(s.Eta > 0) || math.IsInf(s.Eta, 1):
		return fmt.Errorf("eta %v: must be positive", s.Eta)
	case !(s.Gamma > 0 && s.Gamma <= 1):
		return fmt.Errorf("gamma %v: must be above 0 and at most 1", s.Gamma)
	case !(s.Gap > 0) || math.IsInf(s.Gap, 1):
		return fmt.Errorf("gap %v: must be positive", s.Gap)
	case s.Guard.Window < 0, s.Guard.MinQueries < 0:
		return fmt.Errorf("guard: window and min_queries must not be negative")
	case !(s.Guard.MinAttainment >= 0 && s.Guard.MinAttainment <= 1), !(s.Guard.MaxErrorRate >= 0 && s.Guard.MaxErrorRate <= 1):
		return fmt.Errorf("guard: min_attainment and max_error_rate must be within [0, 1]")
	}
	return nil
}

// source is a seeded random source safe for concurrent use.
type source struct {
	mu  sync.Mutex // guards rng
	rng *rand.Rand
}

func newSource(seed uint64) *source {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &source{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// pick draws an index with probability probs[i] (which sum to 1).
func (s *source) pick(probs []float64) int {
	s.mu.Lock()
	u := s.rng.Float64()
	s.mu.Unlock()
	for i, p := range probs {
		if u < p {
			return i
		}
		u -= p
	}
	return len(probs) - 1
}

// softmax returns exp(logw[arm]) normalized over arms; arms not in logw
// count as 0, the best's level, so a newly linked model is tried early.
func softmax(arms []string, logw map[string]float64) []float64 {
	out := make([]float64, len(arms))
	top := math.Inf(-1)
	for _, a := range arms {
		top = max(top, logw[a])
	}
	total := 0.0
	for i, a := range arms {
		out[i] = math.Exp(logw[a] - top)
		total += out[i]
	}
	for i := range out {
		out[i] /= total
	}
	return out
}

// sortedArms returns the keys of m in order.
func sortedArms(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
