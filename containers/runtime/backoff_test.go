package runtime

import (
	"context"
	"testing"
	"time"
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
