package selection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// accuracies are those of the four digits models of the integration test,
// measured on the held-out rows.
var accuracies = map[string]float64{"knn": 0.987, "logreg": 0.815, "tree": 0.633, "constant": 0.083}

var arms = []string{"constant", "knn", "logreg", "tree"}

// simulate streams n queries through p, each arm right with its accuracy,
// and returns the arm of each query.
func simulate(t *testing.T, p Policy, acc map[string]float64, n int, rng *rand.Rand) []string {
	t.Helper()
	ctx := context.Background()
	out := make([]string, n)
	for i := range out {
		c := p.Choose(ctx, arms)
		gains := make([]float64, len(c.Arms))
		for j, a := range c.Arms {
			if rng.Float64() < acc[a] {
				gains[j] = 1
			}
		}
		if err := p.Feedback(ctx, c, gains); err != nil {
			t.Fatal(err)
		}
		out[i] = c.Arms[0]
	}
	return out
}

func share(chosen []string, arm string) float64 {
	n := 0
	for _, a := range chosen {
		if a == arm {
			n++
		}
	}
	return float64(n) / float64(len(chosen))
}

func newTestTable(st State) *Table { return NewTable(Options{State: st}) }

func TestExp3FindsTheBestArm(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		p, _ := newTestTable(nil).Get("digits", NameExp3, nil)
		p.(*Exp3).src = newSource(seed)
		chosen := simulate(t, p, accuracies, 3000, rand.New(rand.NewPCG(seed, 0)))
		if s := share(chosen[2000:], "knn"); s < 0.8 {
			t.Errorf("seed %d: knn got %.3f of the last 1000 queries; want ≥ 0.8", seed, s)
		}
	}
}

func TestExp3MovesAwayFromAnArmThatTurnsBad(t *testing.T) {
	p, _ := newTestTable(nil).Get("digits", NameExp3, nil)
	p.(*Exp3).src = newSource(7)
	rng := rand.New(rand.NewPCG(7, 0))
	simulate(t, p, accuracies, 1500, rng)
	swapped := map[string]float64{"knn": 0.083, "logreg": 0.815, "tree": 0.633, "constant": 0.083}
	chosen := simulate(t, p, swapped, 1000, rng)
	if s := share(chosen[300:500], "knn"); s > 0.2 {
		t.Errorf("knn, now constant, still got %.3f of queries 300-500 after the swap", s)
	}
	if s := share(chosen[500:], "logreg"); s < 0.6 {
		t.Errorf("logreg, now the best, got %.3f of the queries from 500 after the swap; want ≥ 0.6", s)
	}
}

func TestExp4WeighsTheBestArmMost(t *testing.T) {
	p, _ := newTestTable(nil).Get("digits", NameExp4, nil)
	simulate(t, p, accuracies, 500, rand.New(rand.NewPCG(3, 0)))
	c := p.Choose(context.Background(), arms)
	if len(c.Arms) != 4 {
		t.Fatalf("exp4 asked %v; want all four", c.Arms)
	}
	w := zip(c.Arms, c.Weights)
	if w["knn"] <= w["logreg"]+w["tree"]+w["constant"] {
		t.Errorf("weights %v: knn should outvote the others together", w)
	}
}

func TestWeightedShares(t *testing.T) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameWeighted, Shares: map[string]float64{"m:1": 3, "m:2": 1}, Seed: 1}})
	p, _ := tab.Get("a", NameWeighted, nil)
	chosen := simulate(t, p, nil, 4000, rand.New(rand.NewPCG(1, 0)))
	if s := share(chosen, "m:2"); math.Abs(s-0.25) > 0.03 {
		t.Errorf("canary share %.3f; want 0.25", s)
	}
}

func TestGuardRollsBackASlowCanary(t *testing.T) {
	st := NewMemory()
	reg := prometheus.NewRegistry()
	tab := NewTable(Options{State: st, Registerer: reg})
	spec := Spec{Policy: NameWeighted, Shares: map[string]float64{"m": 1, "m:2": 1}, Seed: 1,
		Guard: Guard{Canary: "m:2", MinQueries: 10, MinAttainment: 0.9}}
	tab.Set(map[string]Spec{"a": spec})
	p, _ := tab.Get("a", NameWeighted, nil)
	now := time.Unix(1000, 0)
	for range 9 {
		p.(Observer).Observe("m:2", now, false, false)
		p.(Observer).Observe("m", now, false, false) // not the canary: ignored
	}
	if got := tab.Status(context.Background(), "a", NameWeighted, nil, nil); len(got.RolledBack) != 0 {
		t.Fatalf("rolled back after 9 of 10 queries: %+v", got)
	}
	p.(Observer).Observe("m:2", now, false, false)
	got := tab.Status(context.Background(), "a", NameWeighted, nil, nil)
	if len(got.RolledBack) != 1 || got.Shares["m:2"] != 0 || got.Shares["m"] != 1 {
		t.Fatalf("status after 10 late answers: %+v", got)
	}
	if n := promtest.ToFloat64(tab.m.rollbacks.WithLabelValues("a", "m:2")); n != 1 {
		t.Errorf("rollbacks metric %v; want 1", n)
	}
	for range 100 {
		if c := p.Choose(context.Background(), nil); c.Arms[0] != "m" {
			t.Fatalf("chose %v after the rollback", c.Arms)
		}
	}
	// Another proxy, on the same state, with a fresh table: rolled back too.
	other := newTestTable(st)
	other.Set(map[string]Spec{"a": spec})
	if got := other.Status(context.Background(), "a", NameWeighted, nil, nil); len(got.RolledBack) != 1 {
		t.Errorf("another proxy's status: %+v; want the canary rolled back", got)
	}
}

func TestGuardRollsBackAFailingCanary(t *testing.T) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameWeighted, Shares: map[string]float64{"m": 9, "m:2": 1},
		Guard: Guard{Canary: "m:2", MinQueries: 4, MaxErrorRate: 0.2}}})
	p, _ := tab.Get("a", NameWeighted, nil)
	now := time.Unix(1000, 0)
	for _, failed := range []bool{false, false, true, false} {
		p.(Observer).Observe("m:2", now, !failed, failed)
	}
	if got := tab.Status(context.Background(), "a", NameWeighted, nil, nil); len(got.RolledBack) != 1 {
		t.Errorf("a canary failing 1 in 4 with max_error_rate 0.2 is not rolled back: %+v", got)
	}
}

func TestShadowIsNeverChosen(t *testing.T) {
	tab := newTestTable(nil)
	tab.Set(map[string]Spec{"a": {Policy: NameExp3, Shadow: "knn"}})
	p, _ := tab.Get("a", NameExp3, nil)
	for range 200 {
		c := p.Choose(context.Background(), arms)
		if c.Shadow != "knn" || c.Arms[0] == "knn" {
			t.Fatalf("choice %+v: the shadow must be copied, not chosen", c)
		}
	}
}

func TestCombine(t *testing.T) {
	tests := []struct {
		out     Output
		outs    []string
		weights []float64
		want    string
	}{
		{Label, []string{"3", "5", "5"}, nil, "5"},
		{Label, []string{"3", "5", "5"}, []float64{0.7, 0.2, 0.1}, "3"},
		{Label, []string{`"cat"`, `"dog"`}, nil, `"cat"`}, // a tie: the first
		{Label, []string{"3", "3.0"}, []float64{0.1, 0.1}, "3"},
		{Number, []string{"1", "3"}, []float64{1, 3}, "2.5"},
		{Number, []string{"1", "x", "3"}, nil, "2"},
		{Number, []string{"x", "y", "y"}, nil, "y"},
		{Number, []string{"1e308", "1e308"}, nil, "1e308"}, // a mean past the float range: the vote
		// A sure model outweighs three unsure ones that a vote would follow.
		{Probabilities, []string{"[0,1]", "[0.625,0.375]", "[0.625,0.375]", "[0.625,0.375]"}, nil, "[0.46875,0.53125]"},
		{Probabilities, []string{"[1,0]", "[0,1]"}, []float64{3, 1}, "[0.75,0.25]"},
		{Probabilities, []string{"[1,0]", "7", "[0,1,0]", "[0,1]"}, nil, "[0.5,0.5]"}, // not arrays, or shorter or longer than the first: left out
		{Probabilities, []string{"7", "[]", "7"}, nil, "7"},                           // none are: the vote
		{Probabilities, []string{"[1e308]", "[1e308]"}, nil, "[1e308]"},               // a mean past the float range: the vote
	}
	for _, tt := range tests {
		outs := make([][]byte, len(tt.outs))
		for i, o := range tt.outs {
			outs[i] = []byte(o)
		}
		if got := string(tt.out.Combine(outs, tt.weights)); got != tt.want {
			t.Errorf("%s.Combine(%q, %v) = %q; want %q", tt.out, tt.outs, tt.weights, got, tt.want)
		}
	}
}

func TestCheckClass(t *testing.T) {
	tests := []struct {
		out   Output
		label string
		outs  []string // "" for an arm that did not answer
		ok    bool
	}{
		{Probabilities, "2", []string{"[0.1,0.2,0.7]", ""}, true},
		{Probabilities, "2", []string{"[0.5,0.5]", "[0.1,0.2,0.7]"}, true}, // one output has it
		{Probabilities, "3", []string{"[0.5,0.5]", "[0.1,0.2,0.7]"}, false},
		{Probabilities, "99999", []string{"[0.1,0.2,0.7]"}, false},
		{Probabilities, "5", []string{"7", ""}, true}, // no output is class probabilities: each scores 0
		{Label, "99999", []string{"[0.1,0.9]"}, true},
	}
	for _, tt := range tests {
		outs := make([][]byte, len(tt.outs))
		for i, o := range tt.outs {
			if o != "" {
				outs[i] = []byte(o)
			}
		}
		err := tt.out.CheckClass(json.RawMessage(tt.label), outs)
		if tt.ok && err != nil || !tt.ok && !errors.Is(err, ErrLabel) {
			t.Errorf("%s.CheckClass(%s, %q) = %v; want ok %v", tt.out, tt.label, tt.outs, err, tt.ok)
		}
	}
}

func TestRewardAndLabels(t *testing.T) {
	if r := Label.Reward([]byte("7"), json.RawMessage("7")); r != 1 {
		t.Errorf("label 7 for output 7: reward %v", r)
	}
	if r := Label.Reward([]byte("cat"), json.RawMessage(`"cat"`)); r != 1 {
		t.Errorf("label \"cat\" for the non-JSON output cat: reward %v", r)
	}
	if r := Label.Reward([]byte("7"), json.RawMessage(`"7"`)); r != 0 {
		t.Errorf("label \"7\" for output 7: reward %v; a string is not a number", r)
	}
	if r := Number.Reward([]byte("1.5"), json.RawMessage("2")); r != -0.25 {
		t.Errorf("number 2 for 1.5: reward %v", r)
	}
	if g := Number.Gain(0); g != 1 {
		t.Errorf("gain of a perfect number %v", g)
	}
	for _, tt := range []struct {
		out, label string
		want       float64
	}{{"[0.2,0.7,0.1]", "1", 0.7}, {"[0.2,0.7,0.1]", "0", 0.2}, {"[0.2,0.7,0.1]", "3", 0}, {"2", "0", 0}, {`"x"`, "0", 0}} {
		if r := Probabilities.Reward([]byte(tt.out), json.RawMessage(tt.label)); r != tt.want {
			t.Errorf("class %s for probabilities %s: reward %v; want %v", tt.label, tt.out, r, tt.want)
		}
	}
	if g := Probabilities.Gain(1.5); g != 1 {
		t.Errorf("gain of a score above 1: %v; want 1", g)
	}
	if !Probabilities.Agree([]byte("[0.2,0.8]"), []byte("[0.4,0.6]")) || Probabilities.Agree([]byte("[0.2,0.8]"), []byte("[0.6,0.4]")) {
		t.Error("class probabilities agree when, and only when, their most probable class is the same")
	}
	for _, tt := range []struct {
		out   Output
		label string
		ok    bool
	}{{Label, "3", true}, {Label, `"cat"`, true}, {Label, "true", true}, {Label, "[1]", false}, {Label, "{}", false},
		{Label, "null", false}, {Number, "2.5", true}, {Number, `"2.5"`, false}, {Label, "{", false},
		{Probabilities, "3", true}, {Probabilities, "0", true}, {Probabilities, "-1", false}, {Probabilities, "2.5", false},
		{Probabilities, `"3"`, false}, {Probabilities, "1e10", false}} {
		err := tt.out.CheckLabel(json.RawMessage(tt.label))
		if (err == nil) != tt.ok {
			t.Errorf("%s.CheckLabel(%s) = %v; want ok %v", tt.out, tt.label, err, tt.ok)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	bad := map[string]Spec{
		"must be single":     {Policy: "ucb"},
		"weighted needs":     {Policy: NameWeighted},
		"finite number":      {Policy: NameWeighted, Shares: map[string]float64{"a": -1}},
		"one must be":        {Policy: NameWeighted, Shares: map[string]float64{"a": 0}},
		"not one of":         {Policy: NameWeighted, Shares: map[string]float64{"a": 1}, Guard: Guard{Canary: "b"}},
		"no other arm":       {Policy: NameWeighted, Shares: map[string]float64{"a": 1}, Guard: Guard{Canary: "a"}},
		"takes none":         {Policy: NameExp3, Shares: map[string]float64{"a": 1}},
		"output":             {Output: "image"},
		"gamma":              {Policy: NameExp3, Gamma: 2},
		"eta":                {Policy: NameExp3, Eta: -1},
		"within [0, 1]":      {Policy: NameWeighted, Shares: map[string]float64{"a": 1, "b": 1}, Guard: Guard{Canary: "a", MinAttainment: 2}},
		"must not be negati": {Guard: Guard{MinQueries: -1}},
	}
	for want, s := range bad {
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v; want one saying %q", s, err, want)
		}
	}
	if err := (Spec{}).Validate(); err != nil {
		t.Errorf("the zero spec: %v", err)
	}
}

// testStates runs f on a Memory, a Bolt and a Redis state.
func testStates(t *testing.T, f func(t *testing.T, st State)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemory()) })
	t.Run("bolt", func(t *testing.T) { f(t, newTestBolt(t, testutil.OpenBolt(t, filepath.Join(t.TempDir(), "state.db")))) })
	t.Run("redis", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: testutil.StartRedis(t)})
		t.Cleanup(func() { _ = rdb.Close() })
		f(t, NewRedis(rdb, "test:"))
	})
}

func TestStateAddNormalizes(t *testing.T) {
	testStates(t, func(t *testing.T, st State) {
		ctx := context.Background()
		got, err := st.Add(ctx, "k", map[string]float64{"a": -1, "b": -3, "c": -20}, 5)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{"a": 0, "b": -2, "c": -5}
		for k, v := range want {
			if math.Abs(got[k]-v) > 1e-12 {
				t.Errorf("after Add: %v; want %v", got, want)
			}
		}
		if again, _ := st.Get(ctx, "k"); len(again) != 3 || again["b"] != got["b"] {
			t.Errorf("Get %v; want %v", again, got)
		}
		if flags, err := st.Add(ctx, "f", map[string]float64{"x": 1}, 0); err != nil || flags["x"] != 1 {
			t.Errorf("Add without gap: %v, %v", flags, err)
		}
	})
}

// TestStateAddIsAtomic adds from many goroutines at once: none is lost.
func TestStateAddIsAtomic(t *testing.T) {
	testStates(t, func(t *testing.T, st State) { addConcurrently(t, "n", st, st) })
}

// TestStateAddIsAtomicOnCluster adds to maps whose keys lie on each
// master of a three-master Redis Cluster, through two clients (two
// proxies) at once: none is lost.
func TestStateAddIsAtomicOnCluster(t *testing.T) {
	cluster := testutil.StartRedisCluster(t, 3)
	var states [2]State
	for i := range states {
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
		t.Cleanup(func() { _ = rdb.Close() })
		states[i] = NewRedis(rdb, "test:")
	}
	masters := map[string]bool{}
	for i := 0; len(masters) < 3; i++ {
		key := fmt.Sprint("app-", i)
		addr := cluster.MasterOf(t, "test:"+key)
		if !masters[addr] {
			masters[addr] = true
			t.Run(key+" on "+addr, func(t *testing.T) { addConcurrently(t, key, states[0], states[1]) })
		}
	}
}

// addConcurrently adds to the map at key from eight goroutines, half on
// a and half on b, 25 times each: none is lost.
func addConcurrently(t *testing.T, key string, a, b State) {
	var wg sync.WaitGroup
	for i := range 8 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			for range 25 {
				if _, err := st.Add(context.Background(), key, map[string]float64{"a": 1, "b": 0.5}, 0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, _ := a.Get(context.Background(), key)
	if got["a"] != 200 || got["b"] != 100 {
		t.Errorf("after 200 concurrent adds: %v; want a=200 b=100", got)
	}
}

// TestLearningSurvivesRestartAndReload: a new table on the same state (a
// restarted proxy) and a changed spec (a reload) keep what was learned.
func TestLearningSurvivesRestartAndReload(t *testing.T) {
	testStates(t, func(t *testing.T, st State) {
		ctx := context.Background()
		first := newTestTable(st)
		p, _ := first.Get("digits", NameExp3, nil)
		simulate(t, p, accuracies, 300, rand.New(rand.NewPCG(1, 0)))
		learned := first.Status(ctx, "digits", NameExp3, nil, arms)
		if learned.Shares["knn"] < 0.5 {
			t.Fatalf("after 300 queries: %+v", learned)
		}
		restarted := newTestTable(st)
		if got := restarted.Status(ctx, "digits", NameExp3, nil, arms); !reflect.DeepEqual(got, learned) {
			t.Errorf("after a restart: %+v; want %+v", got, learned)
		}
		restarted.Set(map[string]Spec{"digits": {Policy: NameExp3, Gamma: 0.2}})
		got := restarted.Status(ctx, "digits", NameExp3, nil, arms)
		if got.Shares["knn"] < 0.5 || got.Shares["knn"] == learned.Shares["knn"] {
			t.Errorf("after a reload to gamma 0.2: %+v; want the learned weights with more exploration", got)
		}
	})
}

func newTestBolt(t *testing.T, db *bolt.DB) *Bolt {
	t.Helper()
	st, err := NewBolt(db)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestBoltLearningSurvivesReopen: a proxy that stops closes its file; the
// next one opens it and chooses with what the first learned.
func TestBoltLearningSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db := testutil.OpenBolt(t, path)
	first := newTestTable(newTestBolt(t, db))
	p, _ := first.Get("digits", NameExp3, nil)
	simulate(t, p, accuracies, 300, rand.New(rand.NewPCG(1, 0)))
	learned := first.Status(ctx, "digits", NameExp3, nil, arms)
	if learned.Shares["knn"] < 0.5 {
		t.Fatalf("after 300 queries: %+v", learned)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	reopened := newTestTable(newTestBolt(t, testutil.OpenBolt(t, path)))
	if got := reopened.Status(ctx, "digits", NameExp3, nil, arms); !reflect.DeepEqual(got, learned) {
		t.Errorf("after reopening the file: %+v; want %+v", got, learned)
	}
}

// TestBoltBadValue: a stored value that is not a map of numbers is an
// error naming the key and the file, not a panic or an empty map.
func TestBoltBadValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := testutil.OpenBolt(t, path)
	st := newTestBolt(t, db)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("selection")).Put([]byte("k"), []byte(`{"a": "x"}`)) }); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func() error{
		"Get": func() error { _, err := st.Get(context.Background(), "k"); return err },
		"Add": func() error { _, err := st.Add(context.Background(), "k", map[string]float64{"a": 1}, 0); return err },
	} {
		if err := op(); err == nil || !strings.Contains(err.Error(), "k") || !strings.Contains(err.Error(), path) {
			t.Errorf("%s of a bad value: %v; want an error naming the key and %s", name, err, path)
		}
	}
}

// BenchmarkStateAdd is one feedback's update of the learned weights.
func BenchmarkStateAdd(b *testing.B) {
	states := map[string]func(b *testing.B) State{
		"memory": func(*testing.B) State { return NewMemory() },
		"bolt": func(b *testing.B) State {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			st, err := NewBolt(db)
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	deltas := map[string]float64{"knn": 0.01, "logreg": -0.02, "tree": 0.005}
	for name, open := range states {
		b.Run(name, func(b *testing.B) {
			st := open(b)
			for b.Loop() {
				if _, err := st.Add(b.Context(), "exp3:digits", deltas, 20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestChoiceOutlivesAStalledRedis: an exp3 app's choice reads its weights
// from a Redis that answers nothing (SIGSTOP), with a client that would
// wait for ever and a query deadline an hour away. The choice still
// returns, bounded by Options.ReadTimeout, with the state read counted as
// failed; without that bound it would wait for the query's deadline.
func TestChoiceOutlivesAStalledRedis(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, ReadTimeout: -1, WriteTimeout: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg := prometheus.NewRegistry()
	tab := NewTable(Options{State: NewRedis(rdb, "test:"), Registerer: reg, ReadTimeout: 20 * time.Millisecond})
	p, _ := tab.Get("digits", NameExp3, nil)

	srv.Pause()
	defer srv.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	chosen := make(chan Choice, 1)
	go func() { chosen <- p.Choose(ctx, arms) }()
	select {
	case c := <-chosen:
		if len(c.Arms) != 1 {
			t.Errorf("chose %v; want one arm, chosen without the state", c.Arms)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the choice still waits for the stalled Redis after 30 s")
	}
	if got := promtest.ToFloat64(tab.Metrics().stateErrors.WithLabelValues("digits")); got != 1 {
		t.Errorf("state read errors = %v; want 1", got)
	}
}
