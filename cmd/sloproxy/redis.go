package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
)

// newRedis returns the client that the state, the cache, the selection
// policies and the shared recent queries use, and sends go-redis's own log
// lines to log.
//
// ContextTimeoutEnabled makes go-redis bound every call by its context's
// deadline as well as by its own read and write timeouts (which bound
// calls without a deadline). Without it go-redis ignores the deadline: a
// stalled Redis would hold a cache lookup for the read timeout instead of
// the smaller of cache.redis_timeout and the query's remaining budget.
func newRedis(c config.Redis, log *zap.Logger) *redis.Client {
	redis.SetLogger(redisLogger{log.Named("redis")})
	return redis.NewClient(&redis.Options{Addr: c.Addr, Password: c.Password, DB: c.DB, ContextTimeoutEnabled: true})
}

// redisLogger is go-redis's Logging on zap. go-redis gives its lines no
// level; the ones it prints (failed dials, connections it drops, pub/sub
// reconnections) are warnings.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.WarnLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
