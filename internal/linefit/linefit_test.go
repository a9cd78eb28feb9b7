package linefit

import (
	"math"
	"testing"
)

func TestLine(t *testing.T) {
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-12 }
	var exact Sums
	for _, x := range []float64{1, 2, 4, 8} {
		exact.Add(x, 3+0.5*x)
	}
	if l := exact.Line(); !near(l.MeanX, 3.75) || !near(l.MeanY, 3+0.5*3.75) || !near(l.B, 0.5) || !near(l.SE, 0) {
		t.Errorf("points on y = 3 + x/2: %+v", l)
	}
	var falling Sums
	falling.Add(1, 2)
	falling.Add(2, 1)
	if l := falling.Line(); l.B != 0 || !math.IsInf(l.SE, 1) {
		t.Errorf("two points falling: %+v, want B 0 and SE +Inf", l)
	}
	var one Sums
	one.Add(4, 1)
	one.Add(4, 3)
	one.Add(4, 5)
	if l := one.Line(); l.MeanX != 4 || l.MeanY != 3 || l.B != 0 || !math.IsInf(l.SE, 1) {
		t.Errorf("one size: %+v, want means 4 and 3, B 0, SE +Inf", l)
	}
	var noisy Sums
	for i, y := range []float64{1, 3, 2, 4} {
		noisy.Add(float64(i), y)
	}
	// y = 1.3 + 0.8x; residuals -0.3, 0.9, -0.9, 0.3; SE = √(1.8/2/5).
	if l := noisy.Line(); !near(l.B, 0.8) || !near(l.SE, math.Sqrt(1.8/2/5)) {
		t.Errorf("noisy points: %+v, want B 0.8 and SE %g", l, math.Sqrt(1.8/2/5))
	}
}
