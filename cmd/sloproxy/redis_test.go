package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/internal/testutil"
)

// TestRedisLogsThroughZap: go-redis's own lines (here, the dials it gave
// up on when nothing listens) reach the proxy's zap logger, not standard
// error in go-redis's format.
func TestRedisLogsThroughZap(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	rdb, err := newRedis(config.Redis{Addr: testutil.FreeAddr(t)}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered where nothing listens")
	}
	var found bool
	for _, e := range logs.FilterLoggerName("redis").All() {
		if d, _ := e.ContextMap()["detail"].(string); strings.Contains(d, "failed to dial") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no go-redis line about the failed dials through zap; got %v", logs.All())
	}
}
