package state

import (
	"math"
	"testing"
	"time"
)

// TestRoundDuration checks the conversion of JSON numbers to Durations at
// the limits of a Duration: every value out of range, and NaN, becomes the
// largest Duration.
func TestRoundDuration(t *testing.T) {
	cases := []struct {
		x    float64
		unit time.Duration
		want time.Duration
	}{
		{0, time.Second, 0},
		{1.5, time.Millisecond, 1500 * time.Microsecond},
		{0.0000004, time.Millisecond, 0},
		{-2, time.Second, -2 * time.Second},
		{1 << 62, time.Nanosecond, 1 << 62},
		{math.Ldexp(1, 63), time.Nanosecond, math.MaxInt64},
		{math.Ldexp(1, 63) / 1e6, time.Millisecond, math.MaxInt64},
		{1e300, time.Second, math.MaxInt64},
		{math.Inf(1), time.Second, math.MaxInt64},
		{math.NaN(), time.Millisecond, math.MaxInt64},
		{-math.Ldexp(1, 63), time.Nanosecond, math.MinInt64},
		{-1e300, time.Second, math.MaxInt64},
	}
	for _, c := range cases {
		if got := roundDuration(c.x, c.unit); got != c.want {
			t.Errorf("roundDuration(%g, %v) = %d, want %d", c.x, c.unit, got, c.want)
		}
	}
}
