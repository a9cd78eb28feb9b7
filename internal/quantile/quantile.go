// Package quantile computes a high quantile of a small window without
// sorting it: the latency fit's residual tail and admission's calibrated
// margin both plan against one.
package quantile

import (
	"cmp"
	"math"
	"slices"
)

// High returns the q-quantile of xs, the ⌈q·len(xs)⌉-th smallest (the
// smallest for q ≤ 0, the largest for q ≥ 1), and top, the scratch space
// it used, to pass back next time. It keeps only the values from that one
// up, in ascending order, so for a high quantile of a window it costs a
// pass and a few comparisons per value, not a sort. xs must not be empty.
func High[T cmp.Ordered](xs []T, q float64, top []T) (T, []T) {
	n := len(xs)
	i := min(max(int(math.Ceil(q*float64(n)))-1, 0), n-1)
	m := n - i // the quantile is the m-th largest
	top = top[:0]
	for _, x := range xs {
		if len(top) == m && x <= top[0] {
			continue
		}
		j, _ := slices.BinarySearch(top, x)
		if len(top) < m {
			top = slices.Insert(top, j, x)
			continue
		}
		copy(top[:j-1], top[1:j])
		top[j-1] = x
	}
	return top[0], top
}
