package selection

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// blockingState is a State whose first Get waits for release; it counts
// the Gets.
type blockingState struct {
	gets    atomic.Int32
	entered chan struct{} // closed when the first Get has begun
	release chan struct{}
}

func (s *blockingState) Get(context.Context, string) (map[string]float64, error) {
	if s.gets.Add(1) == 1 {
		close(s.entered)
		<-s.release
	}
	return map[string]float64{"new": 1}, nil
}

func (s *blockingState) Add(context.Context, string, map[string]float64, float64) (map[string]float64, error) {
	return map[string]float64{}, nil
}

// TestChoiceReadRefreshesOnce: while one query refreshes a stale copy,
// the others choose from the copy instead of each reading the state.
func TestChoiceReadRefreshesOnce(t *testing.T) {
	st := &blockingState{entered: make(chan struct{}), release: make(chan struct{})}
	e := &env{app: "a", st: st, m: NewMetrics(prometheus.NewRegistry()), log: zap.NewNop(), readTimeout: time.Hour}
	e.recent = map[string]recentMap{"k": {m: map[string]float64{"old": 1}, at: time.Now().Add(-time.Hour)}}

	refreshed := make(chan map[string]float64, 1)
	go func() { refreshed <- e.choiceRead(context.Background(), "k") }()
	<-st.entered
	for range 10 {
		if m := e.choiceRead(context.Background(), "k"); m["old"] != 1 {
			t.Fatalf("a query during the refresh read %v; want the copy", m)
		}
	}
	close(st.release)
	if m := <-refreshed; m["new"] != 1 {
		t.Errorf("the refreshing query read %v; want the state's map", m)
	}
	if n := st.gets.Load(); n != 1 {
		t.Errorf("%d reads of the state; want 1", n)
	}
	if m := e.choiceRead(context.Background(), "k"); m["new"] != 1 {
		t.Errorf("after the refresh: %v; want the state's map", m)
	}
}
