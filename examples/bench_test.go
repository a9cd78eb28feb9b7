package examples_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// BenchmarkRoundTrip measures one PREDICT round trip from the Go client to
// an echo container in another process over loopback: the Go noop and the
// Python echo (internal/testutil/testdata/echo.py), with batches of 1 and
// 64 inputs of 64 float32 (256 bytes) each. It reports the mean, p50 and
// p99 of one round trip.
//
//	go test -run '^$' -bench RoundTrip -benchmem ./examples/
func BenchmarkRoundTrip(b *testing.B) {
	containers := []struct {
		name string
		argv func(b *testing.B) []string
	}{
		{"go", func(b *testing.B) []string { return []string{testutil.BuildGo(b, "./examples/noop")} }},
		{"python", func(b *testing.B) []string {
			return []string{testutil.Python, filepath.Join(testutil.RepoRoot(b), "internal", "testutil", "testdata", "echo.py")}
		}},
	}
	item := make([]byte, 256)
	for _, c := range containers {
		b.Run(c.name, func(b *testing.B) {
			client := testutil.StartModel(b, c.argv(b)).Client(b)
			for _, n := range []int{1, 64} {
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = item
				}
				b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
					ctx := context.Background()
					var lat []time.Duration
					b.ReportAllocs()
					for b.Loop() {
						start := time.Now()
						if _, err := client.Predict(ctx, rpc.Bytes, batch); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(start))
					}
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				})
			}
		})
	}
}
