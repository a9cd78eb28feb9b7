package state_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/sloproxy/sloproxy/state"
)

// BenchmarkQueryRead is what a query reads: its app, the app's models, their
// current versions and replicas.
func BenchmarkQueryRead(b *testing.B) {
	s := state.NewStore(nil, state.Options{})
	ctx := b.Context()
	for i := range 100 {
		name := fmt.Sprintf("x%d", i)
		if err := s.PutApp(ctx, app(name, state.InputBytes)); err != nil {
			b.Fatal(err)
		}
		if err := s.PutVersion(ctx, version(name, "1", state.InputBytes)); err != nil {
			b.Fatal(err)
		}
		if err := s.Link(ctx, name, name); err != nil {
			b.Fatal(err)
		}
		if err := s.SetReplicas(ctx, name, "1", []string{"127.0.0.1:7001", "127.0.0.1:7002"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer() // the setup's writes are not reads
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			snap := s.Snapshot()
			a, _ := snap.App("x42")
			for _, m := range snap.ModelsOf(a.Name) {
				v, _ := snap.Current(m)
				n += len(snap.Replicas(m, v.Version))
			}
		}
		sink.Add(int64(n))
	})
}

// sink keeps the compiler from dropping the reads.
var sink atomic.Int64
