package quantile

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHighIsTheSortedIndex checks High against sorting, for window sizes
// and quantiles alike and unlike the fit's and the calibration's.
func TestHighIsTheSortedIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var top []int
	for _, n := range []int{1, 2, 7, 64, 112, 256, 512} {
		for _, q := range []float64{-1, 0, 0.5, 0.9, 0.99, 0.995, 0.999, 1, 2} {
			xs := make([]int, n)
			for i := range xs {
				xs[i] = r.IntN(50) // repeats, so ties are taken
			}
			sorted := slices.Sorted(slices.Values(xs))
			want := sorted[min(max(int(math.Ceil(q*float64(n)))-1, 0), n-1)]
			var got int
			got, top = High(xs, q, top)
			if got != want {
				t.Errorf("n %d, q %v: %d, want %d (sorted %v)", n, q, got, want, sorted)
			}
		}
	}
}

func TestHighLeavesItsInputAlone(t *testing.T) {
	xs := []float64{3, 1, 2}
	if got, _ := High(xs, 0.99, nil); got != 3 {
		t.Fatalf("High = %v, want 3", got)
	}
	if !slices.Equal(xs, []float64{3, 1, 2}) {
		t.Fatalf("the input became %v", xs)
	}
}
