package proxy

import (
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// TestProfileSeedsTheFit stores a profile with a version that has served
// nothing and checks that the pool's admission fit for it predicts from
// the profile at once.
func TestProfileSeedsTheFit(t *testing.T) {
	e := newEnv(t, nil)
	e.addModel(state.App{Name: "cost", InputType: state.InputFloat32, SLO: time.Second, DefaultOutput: "-1"}, "cost", slowModel(t))
	p := state.Profile{At: time.Now(), Replicas: 1, Lines: []state.ProfileLine{
		{Batch: 1, Samples: 5, P50: 51 * time.Millisecond, P99: 52 * time.Millisecond},
		{Batch: 2, Samples: 5, P50: 52 * time.Millisecond, P99: 53 * time.Millisecond},
	}}
	must(t, e.store.SetProfile(t.Context(), "cost", "1", p))
	testutil.Eventually(t, 10*time.Second, "the fit seeded from the profile", func() bool {
		f := e.proxy.pool.fit("cost", "1")
		if f == nil {
			return false
		}
		typical, _ := f.Estimate(1)
		return typical > 50*time.Millisecond && typical < 53*time.Millisecond
	})
}
