package slo

import (
	"testing"
	"time"
)

// BenchmarkCalibrationObserve is what calibration costs per admitted
// query when it finishes, with a full window: the error is kept, and
// every calEvery of them the stratum's quantile is recomputed.
func BenchmarkCalibrationObserve(b *testing.B) {
	var c calibration
	now := time.Unix(1000, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.observe(1, now, time.Duration(i*7919%2000)*time.Microsecond, false)
	}
}
