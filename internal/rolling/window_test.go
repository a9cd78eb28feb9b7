package rolling

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestWindowForgetsWhatIsOlderThanItsSpan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWindow(time.Minute)
		for range 90 {
			w.Record(time.Now(), true)
		}
		for range 10 {
			w.Record(time.Now(), false)
		}
		if f, n := w.Attainment(time.Now()); f != 0.9 || n != 100 {
			t.Fatalf("attainment %v of %d, want 0.9 of 100", f, n)
		}
		time.Sleep(30 * time.Second)
		for range 100 {
			w.Record(time.Now(), true)
		}
		if f, n := w.Attainment(time.Now()); f != 0.95 || n != 200 {
			t.Fatalf("30s later: attainment %v of %d, want 0.95 of 200", f, n)
		}
		time.Sleep(45 * time.Second) // the first hundred are older than a minute
		if f, n := w.Attainment(time.Now()); f != 1 || n != 100 {
			t.Fatalf("75s later: attainment %v of %d, want 1 of 100", f, n)
		}
		time.Sleep(time.Hour)
		if f, n := w.Attainment(time.Now()); f != 1 || n != 0 {
			t.Fatalf("an hour later: attainment %v of %d, want 1 of 0", f, n)
		}
	})
}
