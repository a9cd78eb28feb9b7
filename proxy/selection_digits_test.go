package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// digitsArms are the four digits models, best first: held-out accuracy
// 0.987, 0.815, 0.633 and 0.083 (proxy/testdata/train_digits_models.py).
var digitsArms = []string{"knn", "logreg", "tree", "constant"}

// digitsLab holds the held-out digits and the four models, each served by
// examples/sklearn/serve.py in its own process twice, as labels and as
// class probabilities, shared by the subtests.
type digitsLab struct {
	bodies []string // predict bodies of the held-out rows
	labels []int
	pred   map[string][]int // each model's label for each held-out row
	order  []int            // the stream: held-out rows shuffled with a fixed seed, repeated
	addrs  map[string]string
	proba  map[string]string // the same models' predict_proba
}

func newDigitsLab(t *testing.T) *digitsLab {
	testutil.RequirePython(t, "sklearn", "joblib", "numpy")
	dir := t.TempDir()
	root := testutil.RepoRoot(t)
	train := exec.Command(testutil.Python, filepath.Join(root, "proxy", "testdata", "train_digits_models.py"), dir)
	out, err := train.CombinedOutput()
	if err != nil {
		t.Fatalf("training: %v\n%s", err, out)
	}
	t.Logf("trained:\n%s", out)
	raw, err := os.ReadFile(filepath.Join(dir, "heldout.json"))
	if err != nil {
		t.Fatal(err)
	}
	var held struct {
		X    [][]float64      `json:"x"`
		Y    []int            `json:"y"`
		Pred map[string][]int `json:"pred"`
	}
	must(t, json.Unmarshal(raw, &held))
	lab := &digitsLab{labels: held.Y, pred: held.Pred, addrs: map[string]string{}, proba: map[string]string{}}
	for _, x := range held.X {
		b, _ := json.Marshal(map[string]any{"input": x})
		lab.bodies = append(lab.bodies, string(b))
	}
	rng := rand.New(rand.NewPCG(42, 0))
	for len(lab.order) < 3000 {
		lab.order = append(lab.order, rng.Perm(len(held.Y))...)
	}
	serve := filepath.Join(root, "examples", "sklearn", "serve.py")
	for _, m := range digitsArms {
		argv := []string{testutil.Python, serve, "--model", filepath.Join(dir, m+".joblib"), "--input-type", "float64", "--name", m}
		lab.addrs[m] = testutil.StartModel(t, argv).Addr
		lab.proba[m] = testutil.StartModel(t, append(argv, "--method", "predict_proba")).Addr
	}
	return lab
}

// newSelectionEnv is newEnv with the selection table sel (nil: in memory)
// and the answered queries shared through sq.
func newSelectionEnv(t *testing.T, store *state.Store, sel *selection.Table, sq SharedQueries) *env {
	t.Helper()
	return newEnvOpts(t, Options{Store: store, Registry: prometheus.NewRegistry(), Selection: sel, SharedQueries: sq,
		Dispatch: dispatch.Options{HeartbeatInterval: 50 * time.Millisecond}})
}

// newRedisEnv is a proxy of several sharing the Redis at addr under
// prefix: its state store, policy state and answered queries.
func newRedisEnv(t *testing.T, addr, prefix string) *env {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	store := state.NewStore(state.NewRedis(rdb, state.RedisOptions{Prefix: prefix}), state.Options{})
	must(t, store.Start(context.Background()))
	t.Cleanup(func() { _ = store.Close() })
	sel := selection.NewTable(selection.Options{State: selection.NewRedis(rdb, prefix+"selection:")})
	return newSelectionEnv(t, store, sel, SharedQueries{Redis: rdb, Prefix: prefix})
}

// deploy registers version of model at addr, as an external replica.
func deploy(t *testing.T, store *state.Store, model, version, addr string) {
	t.Helper()
	ctx := context.Background()
	must(t, store.PutVersion(ctx, state.ModelVersion{Model: model, Version: version, InputType: state.InputFloat64, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeExternal, Addresses: []string{addr}}}))
	must(t, store.SetReplicas(ctx, model, version, []string{addr}))
}

// setup creates app on e's store, linked to the four models, with spec;
// the models answer class probabilities when spec's output is those.
func (l *digitsLab) setup(e *env, app string, slo time.Duration, spec selection.Spec) {
	e.t.Helper()
	addrs := l.addrs
	if spec.Output == selection.Probabilities {
		addrs = l.proba
	}
	for _, m := range digitsArms {
		deploy(e.t, e.store, m, "1", addrs[m])
	}
	must(e.t, e.store.PutApp(context.Background(), state.App{Name: app, InputType: state.InputFloat64, SLO: slo,
		DefaultOutput: "-1", Policy: spec.Policy, NoCache: true}))
	for _, m := range digitsArms {
		must(e.t, e.store.Link(context.Background(), app, m))
	}
	e.proxy.ApplySelection(map[string]selection.Spec{app: spec})
	for _, m := range digitsArms {
		e.waitHealthy(m, "1")
	}
}

// step sends the n-th query of the stream to app and its label as
// feedback, and returns the answer and the feedback's rewards by arm.
func (l *digitsLab) step(e *env, app string, n int) (answer, rewards map[string]any) {
	e.t.Helper()
	answer, rewards, _ = l.stepVia(e, e, app, n)
	return answer, rewards
}

// stepVia is step with the feedback sent through other. When other did
// not answer, the answering proxy writes the query to Redis in the
// background: a feedback that overtakes the write is answered 404 and
// changes nothing, so it is sent again, for up to 5 s; stepVia returns how
// many were.
func (l *digitsLab) stepVia(e, other *env, app string, n int) (answer, rewards map[string]any, retried int) {
	e.t.Helper()
	row := l.order[n%len(l.order)]
	status, answer := e.post("/apps/"+app+"/predict", l.bodies[row])
	if status != 200 {
		e.t.Fatalf("query %d: %d %v", n, status, answer)
	}
	if answer["default"] == true {
		return answer, nil, 0
	}
	body := fmt.Sprintf(`{"query_id": %q, "label": %d}`, answer["query_id"], l.labels[row])
	for start := time.Now(); ; retried++ {
		status, f := other.post("/apps/"+app+"/feedback", body)
		switch {
		case status == 200:
			rewards, _ = f["rewards"].(map[string]any)
			return answer, rewards, retried
		case status != 404 || time.Since(start) > 5*time.Second:
			e.t.Fatalf("feedback %d: %d %v", n, status, f)
		}
		time.Sleep(time.Millisecond)
	}
}

// armOf is the arm of an answer's model:version.
func armOf(a map[string]any) string {
	arm, _, _ := strings.Cut(fmt.Sprint(a["model"]), ":")
	return arm
}

// TestSelectionOnDigits streams the held-out digits through apps of each
// policy, with the true labels fed back, against four real scikit-learn
// models of clearly different accuracy. The subtests on a proxy of their
// own with an in-memory store run in parallel: each sends its queries one
// after another, so its figures do not depend on the others, and the
// model processes serve them all.
func TestSelectionOnDigits(t *testing.T) {
	lab := newDigitsLab(t)
	t.Run("exp3 finds the best model", func(t *testing.T) {
		t.Parallel()
		e := newSelectionEnv(t, state.NewStore(nil, state.Options{}), nil, SharedQueries{})
		lab.setup(e, "digits", time.Second, selection.Spec{Policy: selection.NameExp3, Seed: 1})
		last := map[string]int{}
		for n := range 3000 {
			a, _ := lab.step(e, "digits", n)
			if n >= 2000 {
				last[armOf(a)]++
			}
		}
		t.Logf("exp3: traffic of the last 1000 of 3000 queries: %v", last)
		if last["knn"] < 800 {
			t.Errorf("knn, the most accurate, got %d of the last 1000 queries; want ≥ 800", last["knn"])
		}
	})
	t.Run("exp3 moves away from a model that turns bad", func(t *testing.T) { t.Parallel(); lab.swap(t) })
	t.Run("exp4 is at least as accurate as the best model", func(t *testing.T) {
		t.Parallel()
		// The ensemble starts with equal weights, a plain majority vote
		// that the three weaker models can win against knn; it is judged
		// once it has learned, after the first 100 queries. The whole
		// stream's figures are logged too.
		all, learned := lab.ensemble(t, selection.Label)
		if best := bestOf(learned); learned["ensemble"] < learned[best] {
			t.Errorf("after the first 100 queries the ensemble was right %v times, %s alone %v times", learned["ensemble"], best, learned[best])
		}
		t.Logf("exp4 voting labels: right answers of all 600 queries %v; of the last 500 %v", all, learned)
	})
	t.Run("exp4 on class probabilities is at least as accurate as the best model throughout", func(t *testing.T) {
		t.Parallel()
		// The mean of the models' class probabilities: from the first
		// query on, knn's certainty outweighs the weaker models' unsure
		// agreement that a vote follows, and their weights fall by the
		// probability they did not give the right class.
		all, learned := lab.ensemble(t, selection.Probabilities)
		if best := bestOf(all); all["ensemble"] < all[best] {
			t.Errorf("of all 600 queries the ensemble was right %v times, %s alone %v times", all["ensemble"], best, all[best])
		}
		t.Logf("exp4 on class probabilities: right answers of all 600 queries %v; of the last 500 %v", all, learned)
	})
	t.Run("two proxies on one Redis learn the same weights", func(t *testing.T) { lab.twoProxies(t) })
	t.Run("a canary slower than the SLO is rolled back", func(t *testing.T) { lab.canary(t) })
}

// ensemble streams 600 queries through an exp4 app of the four models
// with outputs of kind out, the labels fed back, and returns how many each
// model and the ensemble got right, of all and of the last 500.
func (l *digitsLab) ensemble(t *testing.T, out selection.Output) (all, learned map[string]float64) {
	t.Helper()
	e := newSelectionEnv(t, state.NewStore(nil, state.Options{}), nil, SharedQueries{})
	l.setup(e, "vote", time.Second, selection.Spec{Policy: selection.NameExp4, Output: out})
	const n, warmUp = 600, 100
	all, learned = map[string]float64{}, map[string]float64{}
	for i := range n {
		a, rewards := l.step(e, "vote", i)
		if a["model"] != "ensemble" || len(rewards) != 4 {
			t.Fatalf("query %d: %v; rewards %v", i, a, rewards)
		}
		row := l.order[i]
		tally := func(who string, class int) {
			if class == l.labels[row] {
				all[who]++
				if i >= warmUp {
					learned[who]++
				}
			}
		}
		tally("ensemble", answerClass(t, a["output"], out))
		for _, arm := range digitsArms {
			tally(arm, l.pred[arm][row])
		}
	}
	if out == selection.Probabilities {
		// A class past every model's ten is a bad label: 400, and the query
		// stays scorable.
		row := l.order[0]
		status, a := e.post("/apps/vote/predict", l.bodies[row])
		if status != 200 || a["default"] == true {
			t.Fatalf("one more query: %d %v", status, a)
		}
		status, f := e.post("/apps/vote/feedback", fmt.Sprintf(`{"query_id": %q, "label": 10}`, a["query_id"]))
		if msg := fmt.Sprint(f["error"]); status != 400 || !strings.Contains(msg, "class 10") {
			t.Errorf("feedback with class 10 of 10 classes: %d %v; want 400 naming the class", status, f)
		}
		if status, f := e.post("/apps/vote/feedback", fmt.Sprintf(`{"query_id": %q, "label": %d}`, a["query_id"], l.labels[row])); status != 200 {
			t.Errorf("feedback with the right class after a bad one: %d %v; want 200", status, f)
		}
	}
	return all, learned
}

// answerClass is the class an answer's output names: the label, or the
// most probable class of class probabilities.
func answerClass(t *testing.T, output any, out selection.Output) int {
	t.Helper()
	if out != selection.Probabilities {
		label, ok := output.(float64)
		if !ok {
			t.Fatalf("ensemble output %v: want a label", output)
		}
		return int(label)
	}
	p, ok := output.([]any)
	if !ok || len(p) != 10 {
		t.Fatalf("ensemble output %v: want 10 class probabilities", output)
	}
	best, top := 0, -1.0
	for i, v := range p {
		x, ok := v.(float64)
		if !ok {
			t.Fatalf("ensemble output %v: class %d is not a number", output, i)
		}
		if x > top {
			best, top = i, x
		}
	}
	return best
}

// bestOf is the model with the most right answers in right.
func bestOf(right map[string]float64) string {
	best := ""
	for _, arm := range digitsArms {
		if best == "" || right[arm] > right[best] {
			best = arm
		}
	}
	return best
}

// swap replaces knn's current version with the constant predictor after
// 1500 of 3000 queries, and checks that exp3 moves the traffic away within
// 500 queries. With SLOPROXY_SELECTION_OUT set to a folder it writes the
// traffic share per window of 50 queries there, as swap.csv and swap.png.
func (l *digitsLab) swap(t *testing.T) {
	e := newSelectionEnv(t, state.NewStore(nil, state.Options{}), nil, SharedQueries{})
	l.setup(e, "digits", time.Second, selection.Spec{Policy: selection.NameExp3, Seed: 2})
	const total, at, window = 3000, 1500, 50
	arms := make([]string, total)
	for n := range total {
		if n == at {
			deploy(t, e.store, "knn", "2", l.addrs["constant"])
			must(t, e.store.SetCurrent(context.Background(), "knn", "2"))
			e.waitHealthy("knn", "2")
		}
		a, _ := l.step(e, "digits", n)
		arms[n] = armOf(a)
		if n >= at && a["model"] == "knn:1" {
			t.Fatalf("query %d after the swap answered by knn:1", n)
		}
	}
	shares := make([]map[string]float64, total/window)
	for w := range shares {
		shares[w] = map[string]float64{}
		for _, arm := range arms[w*window : (w+1)*window] {
			shares[w][arm] += 1.0 / window
		}
	}
	before, after := shares[at/window-1]["knn"], shares[(at+500)/window-1]["knn"]
	t.Logf("exp3 swap: knn's share %.2f in the 50 queries before the swap, %.2f in queries %d-%d after it", before, after, 450, 500)
	if before < 0.8 || after > 0.2 {
		t.Errorf("knn's share: %.2f before the swap (want ≥ 0.8), %.2f in the window ending 500 queries after it (want ≤ 0.2)", before, after)
	}
	if out := os.Getenv("SLOPROXY_SELECTION_OUT"); out != "" {
		must(t, writeShares(out, shares, window, at))
	}
}

// writeShares writes the traffic share per window as CSV and a plot into
// dir, which it creates if need be.
func writeShares(dir string, shares []map[string]float64, window, at int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var csv strings.Builder
	csv.WriteString("query," + strings.Join(digitsArms, ",") + "\n")
	p := plot.New()
	p.Title.Text = fmt.Sprintf("exp3 on digits: knn's current version becomes the constant predictor at query %d", at)
	p.X.Label.Text = "query"
	p.Y.Label.Text = fmt.Sprintf("traffic share (per %d queries)", window)
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = true
	colors := []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}}
	lines := make([]plotter.XYs, len(digitsArms))
	for w, s := range shares {
		fmt.Fprintf(&csv, "%d", (w+1)*window)
		for i, arm := range digitsArms {
			fmt.Fprintf(&csv, ",%.2f", s[arm])
			lines[i] = append(lines[i], plotter.XY{X: float64((w + 1) * window), Y: s[arm]})
		}
		csv.WriteString("\n")
	}
	for i, arm := range digitsArms {
		l, err := plotter.NewLine(lines[i])
		if err != nil {
			return err
		}
		l.Color = colors[i]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(arm, l)
	}
	swap, err := plotter.NewLine(plotter.XYs{{X: float64(at), Y: 0}, {X: float64(at), Y: 1}})
	if err != nil {
		return err
	}
	swap.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(swap)
	if err := os.WriteFile(filepath.Join(dir, "swap.csv"), []byte(csv.String()), 0o644); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 4*vg.Inch, filepath.Join(dir, "swap.png"))
}

// twoProxies streams queries through two proxies sharing one Redis (state,
// policy state and answered queries), alternating, each query's feedback
// to the proxy that did not answer it; both must end with the same
// weights.
func (l *digitsLab) twoProxies(t *testing.T) {
	addr := testutil.StartRedis(t)
	var envs []*env
	for range 2 {
		envs = append(envs, newRedisEnv(t, addr, "e2e:"))
	}
	spec := selection.Spec{Policy: selection.NameExp3, Seed: 3}
	l.setup(envs[0], "digits", time.Second, spec)
	envs[1].proxy.ApplySelection(map[string]selection.Spec{"digits": spec})
	for _, m := range digitsArms {
		envs[1].waitHealthy(m, "1")
	}
	ctx := context.Background()
	retried := 0
	for n := range 600 {
		_, _, r := l.stepVia(envs[n%2], envs[(n+1)%2], "digits", n)
		retried += r
	}
	t.Logf("two proxies: %d of 600 feedbacks found their query not yet in Redis and were sent again", retried)
	a, err := envs[0].proxy.SelectionStatus(ctx, "digits")
	must(t, err)
	b, err := envs[1].proxy.SelectionStatus(ctx, "digits")
	must(t, err)
	t.Logf("two proxies: shares %v and %v", a.Shares, b.Shares)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the proxies disagree: %+v and %+v", a, b)
	}
	for _, arm := range digitsArms[1:] {
		if a.Shares["knn"] <= a.Shares[arm] {
			t.Errorf("after 600 queries knn's share %.3f is not above %s's %.3f", a.Shares["knn"], arm, a.Shares[arm])
		}
	}
}

// canary sends half of an app's traffic to a canary version of knn that
// takes 2 s against an SLO of 150 ms: its guard rolls it back, no query
// goes to it afterwards, and no query gets a late answer.
func (l *digitsLab) canary(t *testing.T) {
	e := newSelectionEnv(t, state.NewStore(nil, state.Options{}), nil, SharedQueries{})
	slow := testutil.StartModel(t, []string{testutil.BuildGo(t, "./examples/costmodel"), "--a", "2s", "--b", "0", "--input-type", "float64"}).Addr
	spec := selection.Spec{Policy: selection.NameWeighted, Seed: 4, Shares: map[string]float64{"knn": 1, "knn:slow": 1},
		Guard: selection.Guard{Canary: "knn:slow", MinQueries: 10, MinAttainment: 0.9}}
	l.setup(e, "rollout", 150*time.Millisecond, spec)
	deploy(t, e.store, "knn", "slow", slow)
	e.waitHealthy("knn", "slow")
	rolledBack := -1
	for n := range 80 {
		a, _ := l.step(e, "rollout", n)
		switch {
		case a["model"] == "knn:slow" && a["default"] != true:
			t.Fatalf("query %d: the slow canary answered: %v", n, a)
		case a["default"] == true:
			// After the rollback only the canary's choice is a failure:
			// knn:1 itself may miss a 150 ms SLO on a loaded machine.
			if rolledBack >= 0 && a["model"] == "knn:slow" {
				t.Fatalf("query %d, after the rollback, went to the canary: %v", n, a)
			}
			if why := fmt.Sprint(a["default_explanation"]); !strings.Contains(why, "deadline") && !strings.Contains(why, "shed") {
				t.Fatalf("query %d: default output without a deadline or shed explanation: %v", n, a)
			}
		case a["model"] != "knn:1":
			t.Fatalf("query %d answered by %v", n, a["model"])
		}
		if st, _ := e.proxy.SelectionStatus(context.Background(), "rollout"); rolledBack < 0 && len(st.RolledBack) == 1 {
			rolledBack = n
		}
	}
	st, _ := e.proxy.SelectionStatus(context.Background(), "rollout")
	t.Logf("canary rolled back after query %d: %+v", rolledBack, st)
	if rolledBack < 0 || st.Shares["knn:slow"] != 0 || st.Shares["knn"] != 1 {
		t.Fatalf("the canary was not rolled back: %+v", st)
	}
	if n := counterSum(t, e.reg, "sloproxy_selection_rollbacks_total"); n != 1 {
		t.Errorf("rollbacks counted %v; want 1", n)
	}
}

// counterSum is the sum of the counter name's series in reg whose labels
// include the pairs of labels (name, value, name, value...).
func counterSum(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	must(t, err)
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
