package selection

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/rolling"
)

// Status is what a policy has learned or decided, for the admin API.
type Status struct {
	// Policy is the policy's name.
	Policy string `json:"policy"`
	// Shares is each arm's probability of being chosen for a query, or
	// for exp4 its weight in the vote.
	Shares map[string]float64 `json:"shares"`
	// Shadow is the arm that gets copies; empty means none.
	Shadow string `json:"shadow,omitempty"`
	// RolledBack lists the canaries rolled back.
	RolledBack []string `json:"rolled_back,omitempty"`
	// Spec is the spec the policy was built from, with its defaults.
	Spec Spec `json:"spec"`
	// Source says where the spec comes from: admin, config or defaults.
	Source Source `json:"source"`
}

// env is what every policy of an app shares: its shared state, metrics
// and logger.
type env struct {
	app         string
	st          State
	m           *Metrics
	log         *zap.Logger
	readTimeout time.Duration // bounds choiceRead's read of st

	// recent holds the maps this proxy last read or wrote, for choices:
	// a query reads its policy's weights from a copy at most stateMaxAge
	// old instead of a Redis round trip each. This proxy's own feedback
	// updates the copy at once; other proxies' reaches it within
	// stateMaxAge. The learners' status reads the state afresh.
	mu     sync.Mutex
	recent map[string]recentMap
}

type recentMap struct {
	m  map[string]float64 // never changed once stored
	at time.Time
}

// stateMaxAge is how old a copy of the shared state a choice may use.
const stateMaxAge = 100 * time.Millisecond

// choiceRead is read for a choice: from this proxy's copy while it is
// fresh, else from the state within readTimeout (and the query's
// deadline). The first query to find a copy stale refreshes it; the
// queries that come meanwhile choose from the copy, which it restamps
// before it reads, so that one query in each stateMaxAge makes the round
// trip, not every query that arrives while it is under way. When the read
// fails, the choice uses the last copy, which then counts as fresh for
// another stateMaxAge: while the state is unreachable one query in each
// stateMaxAge waits for it. The map must not be changed.
func (e *env) choiceRead(ctx context.Context, key string) map[string]float64 {
	e.mu.Lock()
	r, ok := e.recent[key]
	fresh := ok && time.Since(r.at) < stateMaxAge
	if ok && !fresh {
		e.recent[key] = recentMap{m: r.m, at: time.Now()} // this query refreshes it
	}
	e.mu.Unlock()
	if fresh {
		return r.m
	}
	rctx, cancel := context.WithTimeout(ctx, e.readTimeout)
	m, err := e.st.Get(rctx, key)
	cancel()
	if err != nil {
		if !ok {
			r.m = e.unreadable(err)
		} else {
			e.unreadable(err)
		}
		e.remember(key, r.m)
		return r.m
	}
	e.remember(key, m)
	return m
}

// add is State.Add, keeping the result as this proxy's copy.
func (e *env) add(ctx context.Context, key string, deltas map[string]float64, gap float64) error {
	m, err := e.st.Add(ctx, key, deltas, gap)
	if err == nil {
		e.remember(key, m)
	}
	return err
}

func (e *env) remember(key string, m map[string]float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.recent == nil {
		e.recent = map[string]recentMap{}
	}
	e.recent[key] = recentMap{m: m, at: time.Now()}
}

// read returns the map at key, or an empty one (counted and logged at
// debug) when the state cannot be read.
func (e *env) read(ctx context.Context, key string) map[string]float64 {
	m, err := e.st.Get(ctx, key)
	if err != nil {
		return e.unreadable(err)
	}
	return m
}

// unreadable counts and logs a state read that failed, and returns the
// empty map a policy then chooses with.
func (e *env) unreadable(err error) map[string]float64 {
	e.m.stateErrors.WithLabelValues(e.app).Inc()
	if ce := e.log.Check(zap.DebugLevel, "selection: state unreadable; choosing without it"); ce != nil {
		ce.Write(zap.String("app", e.app), zap.Error(err))
	}
	return map[string]float64{}
}

// Single asks the first arm: the model linked to the app, at its current
// version.
type Single struct{}

var _ Policy = Single{}

// Choose implements Policy.
func (Single) Choose(_ context.Context, arms []string) Choice {
	if len(arms) == 0 {
		return Choice{}
	}
	return Choice{Arms: arms[:1], Probs: []float64{1}}
}

// Feedback implements Policy: Single learns nothing.
func (Single) Feedback(context.Context, Choice, []float64) error { return nil }

func (Single) status(_ context.Context, arms []string) Status {
	s := Status{Policy: NameSingle, Shares: map[string]float64{}}
	if len(arms) > 0 {
		s.Shares[arms[0]] = 1
	}
	return s
}

// Weighted splits traffic by fixed shares: a canary. With a guard, a
// canary that misses the SLO or fails too often is rolled back: its share
// goes to the other arms, on every proxy sharing the state.
type Weighted struct {
	arms   []string
	shares []float64 // normalized
	back   []float64 // normalized, the canary's share 0
	src    *source
	guard  *guard // nil: no canary guarded
}

var (
	_ Policy   = (*Weighted)(nil)
	_ Observer = (*Weighted)(nil)
)

func newWeighted(e *env, s Spec) *Weighted {
	w := &Weighted{arms: sortedArms(s.Shares), src: newSource(s.Seed)}
	w.shares = make([]float64, len(w.arms))
	w.back = make([]float64, len(w.arms))
	var total, rest float64
	for i, a := range w.arms {
		w.shares[i] = s.Shares[a]
		total += w.shares[i]
		if a != s.Guard.Canary {
			w.back[i] = w.shares[i]
			rest += w.shares[i]
		}
	}
	for i := range w.arms {
		w.shares[i] /= total
		if rest > 0 {
			w.back[i] /= rest
		} else if w.arms[i] != s.Guard.Canary {
			w.back[i] = 1 / float64(len(w.arms)-1)
		}
	}
	if s.Guard.Canary != "" {
		w.guard = &guard{env: e, spec: s.Guard, key: "canary:" + e.app,
			within: rolling.NewWindow(s.Guard.Window), ok: rolling.NewWindow(s.Guard.Window)}
	}
	return w
}

// Choose implements Policy; arms are the shares'.
func (w *Weighted) Choose(ctx context.Context, _ []string) Choice {
	shares := w.current(ctx)
	i := w.src.pick(shares)
	return Choice{Arms: []string{w.arms[i]}, Probs: []float64{shares[i]}}
}

func (w *Weighted) current(ctx context.Context) []float64 {
	if w.guard != nil && w.guard.rolledBack(ctx) {
		return w.back
	}
	return w.shares
}

// Feedback implements Policy: the shares are fixed.
func (w *Weighted) Feedback(context.Context, Choice, []float64) error { return nil }

// Observe implements Observer: it watches the canary.
func (w *Weighted) Observe(arm string, now time.Time, within, failed bool) {
	if w.guard != nil {
		w.guard.observe(arm, now, within, failed)
	}
}

func (w *Weighted) status(ctx context.Context, _ []string) Status {
	s := Status{Policy: NameWeighted, Shares: map[string]float64{}}
	for i, v := range w.current(ctx) {
		s.Shares[w.arms[i]] = v
	}
	if w.guard != nil && w.guard.rolledBack(ctx) {
		s.RolledBack = []string{w.guard.spec.Canary}
	}
	return s
}

// guard watches one canary arm.
type guard struct {
	*env
	spec Guard
	key  string      // the state's map of rolled-back canaries: arm → 1
	done atomic.Bool // rolled back, as this proxy knows
	// within counts the canary's answers within the SLO; ok those that
	// did not fail.
	within, ok *rolling.Window
}

// rolledBack reports whether the canary was rolled back by any proxy.
func (g *guard) rolledBack(ctx context.Context) bool {
	if g.done.Load() {
		return true
	}
	if g.choiceRead(ctx, g.key)[g.spec.Canary] >= 1 {
		g.done.Store(true)
	}
	return g.done.Load()
}

func (g *guard) observe(arm string, now time.Time, within, failed bool) {
	if arm != g.spec.Canary || g.done.Load() {
		return
	}
	g.within.Record(now, within)
	g.ok.Record(now, !failed)
	attained, n := g.within.Attainment(now)
	if n < uint64(g.spec.MinQueries) {
		return
	}
	okFrac, _ := g.ok.Attainment(now)
	switch {
	case g.spec.MinAttainment > 0 && attained < g.spec.MinAttainment:
		g.rollback(zap.String("reason", "attainment"), zap.Float64("attainment", attained), zap.Float64("min_attainment", g.spec.MinAttainment))
	case g.spec.MaxErrorRate > 0 && 1-okFrac > g.spec.MaxErrorRate:
		g.rollback(zap.String("reason", "errors"), zap.Float64("error_rate", 1-okFrac), zap.Float64("max_error_rate", g.spec.MaxErrorRate))
	}
}

// rollbackTimeout bounds the write that tells the other proxies of a
// rollback; this proxy has rolled back already.
const rollbackTimeout = 2 * time.Second

func (g *guard) rollback(why ...zap.Field) {
	if !g.done.CompareAndSwap(false, true) {
		return
	}
	g.m.rollbacks.WithLabelValues(g.app, g.spec.Canary).Inc()
	g.log.Warn("selection: canary rolled back", append(why, zap.String("app", g.app), zap.String("canary", g.spec.Canary),
		zap.Duration("window", g.spec.Window))...)
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	if err := g.add(ctx, g.key, map[string]float64{g.spec.Canary: 1}, 0); err != nil {
		g.m.stateErrors.WithLabelValues(g.app).Inc()
		g.log.Error("selection: could not record the rollback in the shared state; other proxies keep the canary", zap.String("app", g.app), zap.Error(err))
	}
}

// Exp3 is the adversarial bandit: each query goes to one arm, drawn with
// probability (1-Gamma)·softmax(log-weights) + Gamma/K. Feedback lowers
// the chosen arm's log-weight by Eta·(1-gain)/p: losses, not gains, are
// importance-weighted (Exp3 for losses), which keeps the variance low for
// arms that are mostly right.
type Exp3 struct {
	*env
	key        string
	eta, gamma float64
	gap        float64
	src        *source
}

var _ Policy = (*Exp3)(nil)

func newExp3(e *env, s Spec) *Exp3 {
	return &Exp3{env: e, key: "exp3:" + e.app, eta: s.Eta, gamma: s.Gamma, gap: s.Gap, src: newSource(s.Seed)}
}

// probs are the arms' probabilities from the log-weights logw.
func (x *Exp3) probs(logw map[string]float64, arms []string) []float64 {
	p := softmax(arms, logw)
	for i := range p {
		p[i] = (1-x.gamma)*p[i] + x.gamma/float64(len(arms))
	}
	return p
}

// Choose implements Policy.
func (x *Exp3) Choose(ctx context.Context, arms []string) Choice {
	if len(arms) == 0 {
		return Choice{}
	}
	p := x.probs(x.choiceRead(ctx, x.key), arms)
	i := x.src.pick(p)
	return Choice{Arms: []string{arms[i]}, Probs: []float64{p[i]}, Among: arms}
}

// Feedback implements Policy.
func (x *Exp3) Feedback(ctx context.Context, c Choice, gains []float64) error {
	deltas := map[string]float64{}
	for _, arm := range c.Among {
		deltas[arm] = 0
	}
	answered := false
	for i, arm := range c.Arms {
		if !math.IsNaN(gains[i]) && c.Probs[i] > 0 {
			deltas[arm], answered = -x.eta*(1-gains[i])/c.Probs[i], true
		}
	}
	if !answered {
		return nil
	}
	return x.add(ctx, x.key, deltas, x.gap)
}

func (x *Exp3) status(ctx context.Context, arms []string) Status {
	return Status{Policy: NameExp3, Shares: zip(arms, x.probs(x.read(ctx, x.key), arms))}
}

// Exp4 is the ensemble: every arm answers and the answers combine by the
// arms' weights, softmax(log-weights). Since every arm answered, feedback
// scores each (full information, as Hedge): its log-weight falls by
// Eta·(1-gain).
type Exp4 struct {
	*env
	key      string
	eta, gap float64
}

var _ Policy = (*Exp4)(nil)

func newExp4(e *env, s Spec) *Exp4 {
	return &Exp4{env: e, key: "exp4:" + e.app, eta: s.Eta, gap: s.Gap}
}

// Choose implements Policy.
func (x *Exp4) Choose(ctx context.Context, arms []string) Choice {
	probs := make([]float64, len(arms))
	for i := range probs {
		probs[i] = 1
	}
	return Choice{Arms: arms, Probs: probs, Weights: softmax(arms, x.choiceRead(ctx, x.key))}
}

// Feedback implements Policy.
func (x *Exp4) Feedback(ctx context.Context, c Choice, gains []float64) error {
	deltas := map[string]float64{}
	answered := false
	for i, arm := range c.Arms {
		deltas[arm] = 0
		if !math.IsNaN(gains[i]) {
			deltas[arm], answered = -x.eta*(1-gains[i]), true
		}
	}
	if !answered {
		return nil
	}
	return x.add(ctx, x.key, deltas, x.gap)
}

func (x *Exp4) status(ctx context.Context, arms []string) Status {
	return Status{Policy: NameExp4, Shares: zip(arms, softmax(arms, x.read(ctx, x.key)))}
}

// Shadow wraps a policy and sends a copy of each query to one more arm,
// whose answer is recorded and compared, never returned.
type Shadow struct {
	Policy
	Arm string
}

var (
	_ Policy   = Shadow{}
	_ Observer = Shadow{}
)

// Choose implements Policy: the inner policy's choice with the shadow.
func (s Shadow) Choose(ctx context.Context, arms []string) Choice {
	c := s.Policy.Choose(ctx, slices.DeleteFunc(slices.Clone(arms), func(a string) bool { return a == s.Arm }))
	c.Shadow = s.Arm
	return c
}

// Observe implements Observer for the inner policy.
func (s Shadow) Observe(arm string, now time.Time, within, failed bool) {
	if o, ok := s.Policy.(Observer); ok {
		o.Observe(arm, now, within, failed)
	}
}

func (s Shadow) status(ctx context.Context, arms []string) Status {
	st := statusOf(ctx, s.Policy, slices.DeleteFunc(slices.Clone(arms), func(a string) bool { return a == s.Arm }))
	st.Shadow = s.Arm
	return st
}

// statuser is implemented by every policy of this package.
type statuser interface {
	status(ctx context.Context, arms []string) Status
}

func statusOf(ctx context.Context, p Policy, arms []string) Status {
	if s, ok := p.(statuser); ok {
		return s.status(ctx, arms)
	}
	return Status{}
}

func zip(arms []string, v []float64) map[string]float64 {
	out := make(map[string]float64, len(arms))
	for i, a := range arms {
		out[a] = v[i]
	}
	return out
}
