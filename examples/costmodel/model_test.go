package main

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestCostIsAPlusBN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newCostModel(5*time.Millisecond, 250*time.Microsecond, 0, sleepTimer)
		for _, n := range []int{1, 8, 64} {
			start := time.Now()
			out, err := m.Predict(context.Background(), make([][]byte, n))
			if err != nil || len(out) != n {
				t.Fatalf("n=%d: %v, %d outputs", n, err, len(out))
			}
			want := 5*time.Millisecond + time.Duration(n)*250*time.Microsecond
			if got := time.Since(start); got != want {
				t.Errorf("n=%d took %v, want %v", n, got, want)
			}
		}
	})
}

func TestOneBatchAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newCostModel(10*time.Millisecond, 0, 0, sleepTimer)
		start := time.Now()
		done := make(chan time.Duration, 2)
		for range 2 {
			go func() {
				_, _ = m.Predict(context.Background(), make([][]byte, 1))
				done <- time.Since(start)
			}()
		}
		first, second := <-done, <-done
		if first != 10*time.Millisecond || second != 20*time.Millisecond {
			t.Fatalf("batches finished at %v and %v, want 10ms and 20ms", first, second)
		}
	})
}

func TestExpiredWhileWaitingIsNotComputed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newCostModel(10*time.Millisecond, 0, 0, sleepTimer)
		busy := make(chan struct{})
		go func() {
			defer close(busy)
			_, _ = m.Predict(context.Background(), make([][]byte, 1))
		}()
		defer func() { <-busy }()
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := m.Predict(ctx, make([][]byte, 1))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 5*time.Millisecond {
			t.Fatalf("gave up after %v, want 5ms", got)
		}
	})
}
