package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRedisServerStopStart(t *testing.T) {
	s := NewRedisServer(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after start: %v", err)
	}
	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatalf("PING answered after Stop")
	}
	s.Stop() // a second Stop does nothing
	s.Start()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after restart on %s: %v", s.Addr, err)
	}
}

func TestStartRedis(t *testing.T) {
	a, b := StartRedis(t), StartRedis(t)
	if a == b {
		t.Fatalf("two servers share the address %s", a)
	}
	for _, addr := range []string{a, b} {
		if err := ping(addr); err != nil {
			t.Errorf("PING %s: %v", addr, err)
		}
	}
}

func TestRedisServerPauseResume(t *testing.T) {
	s := NewRedisServer(t)
	s.Pause()
	// A paused server never answers, however long the wait: ping's own
	// bound only ends the attempt.
	if err := ping(s.Addr); err == nil {
		t.Fatal("PING answered while paused")
	}
	s.Resume()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
	s.Pause() // killed at the end of the test while paused
}
