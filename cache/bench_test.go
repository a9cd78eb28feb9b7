package cache

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	sltest "github.com/sloproxy/sloproxy/internal/testutil"
)

// BenchmarkLookup measures one lookup of a 16-float input's key, hashing
// included, answered by L1 or by L2 (a real redis-server on loopback; the
// entry is dropped from L1 before each L2 lookup), with p50 and p99:
//
//	go test -run '^$' -bench Lookup -benchmem ./cache/
func BenchmarkLookup(b *testing.B) {
	addr := sltest.StartRedis(b)
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	c, err := New(Options{Redis: client, Prefix: "bench:", Timeout: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	input := make([]byte, 64)
	k := NewKey("m", "1", "float32", input)
	c.Put(k, []byte(`[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]`), time.Hour)
	for client.Exists(context.Background(), c.redisKey(k)).Val() == 0 {
		time.Sleep(time.Millisecond) // the background write
	}
	ctx := context.Background()
	for _, level := range []Hit{L1, L2} {
		name := map[Hit]string{L1: "l1", L2: "l2"}[level]
		b.Run(name, func(b *testing.B) {
			var keys [1]Key
			var outs [1][]byte
			var hits [1]Hit
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				if level == L2 {
					c.l1.Invalidate(k.Index)
				}
				start := time.Now()
				keys[0] = NewKey("m", "1", "float32", input)
				if c.Get(keys[:], outs[:], hits[:]) > 0 {
					c.Fetch(ctx, keys[:], time.Hour, outs[:], hits[:])
				}
				lat = append(lat, time.Since(start))
				if hits[0] != level {
					b.Fatalf("hit %v, want %v", hits[0], level)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
		})
	}
}
