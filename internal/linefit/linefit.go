// Package linefit fits latency = a + b·size by least squares, every point
// weighing alike: the latency fit of package slo fits it to the batches it
// observes, and the profiler (containers/profile) to the fastest batch of
// each size it profiled.
package linefit

import "math"

// Sums accumulates the points of a fit. Its zero value holds none.
type Sums struct{ k, sx, sy, sxx, sxy, syy float64 }

// Add adds the point (x, y).
func (s *Sums) Add(x, y float64) {
	s.k++
	s.sx += x
	s.sy += y
	s.sxx += x * x
	s.sxy += x * y
	s.syy += y * y
}

// Line is a least-squares line: the means of the points' x and y, the
// slope B (at least 0: a cost per item is never negative) and its standard
// error SE. Where the x do not vary (a variance of 1e-9 or less) B is 0 and
// SE +Inf; with two points SE is +Inf too.
type Line struct{ MeanX, MeanY, B, SE float64 }

// Line fits the line to the points added, at least one.
func (s *Sums) Line() Line {
	l := Line{MeanX: s.sx / s.k, MeanY: s.sy / s.k, SE: math.Inf(1)}
	varX := s.sxx/s.k - l.MeanX*l.MeanX
	if varX <= 1e-9 {
		return l
	}
	cov := s.sxy/s.k - l.MeanX*l.MeanY
	l.B = max(0, cov/varX)
	if s.k > 2 {
		ssr := max(0, s.k*(s.syy/s.k-l.MeanY*l.MeanY-cov*cov/varX)) // the residuals' sum of squares
		l.SE = math.Sqrt(ssr / (s.k - 2) / (s.k * varX))
	}
	return l
}
