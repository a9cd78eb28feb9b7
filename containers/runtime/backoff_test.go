package runtime

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, ResetAfter: 30 * time.Second}
	tests := []struct {
		up, want time.Duration
	}{
		{0, 100 * time.Millisecond}, // the first failure
		{time.Second, 200 * time.Millisecond},
		{time.Second, 400 * time.Millisecond},
		{time.Second, 800 * time.Millisecond},
		{time.Second, time.Second}, // capped
		{time.Second, time.Second},
		{30 * time.Second, 100 * time.Millisecond}, // ran long enough: from the start
		{time.Second, 200 * time.Millisecond},
	}
	for i, tc := range tests {
		if got := b.Next(tc.up); got != tc.want {
			t.Errorf("failure %d after %v up: wait %v, want %v", i, tc.up, got, tc.want)
		}
	}
}

func TestSleepEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep ran out an hour on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms reported a cancelled context")
	}
}

// TestRestarter runs a replica that fails twice, then runs until its ctx
// ends: two failures heard with the backoff's waits, two restarts.
func TestRestarter(t *testing.T) {
	r := Restarter{Backoff: Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond, ResetAfter: time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	var waits []time.Duration
	r.Run(ctx, zap.NewNop(), func(ctx context.Context) {
		calls++
		if calls == 3 {
			cancel()
			<-ctx.Done()
		}
	}, func(_, wait time.Duration) { waits = append(waits, wait) })
	if calls != 3 || r.Restarts() != 2 {
		t.Errorf("%d calls, %d restarts; want 3 and 2", calls, r.Restarts())
	}
	if len(waits) != 2 || waits[0] != time.Millisecond || waits[1] != 2*time.Millisecond {
		t.Errorf("waits %v; want [1ms 2ms]", waits)
	}
}

// TestRestarterRecovers: a panic ends Run, logged, instead of the program.
func TestRestarterRecovers(t *testing.T) {
	r := Restarter{Backoff: Backoff{Min: time.Millisecond, Max: time.Millisecond, ResetAfter: time.Hour}}
	r.Run(context.Background(), zap.NewNop(), func(context.Context) { panic("boom") }, func(_, _ time.Duration) {})
	if r.Restarts() != 0 {
		t.Errorf("%d restarts after a panic; want 0", r.Restarts())
	}
}

func TestBackoffWithDefaults(t *testing.T) {
	tests := []struct{ in, want Backoff }{
		{Backoff{}, Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, ResetAfter: 30 * time.Second}},
		{Backoff{Min: time.Second, Max: time.Minute, ResetAfter: time.Hour}, Backoff{Min: time.Second, Max: time.Minute, ResetAfter: time.Hour}},
		{Backoff{Min: time.Minute}, Backoff{Min: time.Minute, Max: time.Minute, ResetAfter: 30 * time.Second}}, // Max raised to Min
	}
	for _, tc := range tests {
		if got := tc.in.WithDefaults(); got != tc.want {
			t.Errorf("%+v.WithDefaults() = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
