package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
)

// newRedis returns the client that the state, the cache, the selection
// policies and the shared recent queries use: go-redis's universal client,
// which is a Sentinel-backed failover client with redis.master_name, a
// Cluster client with redis.cluster, and a plain client otherwise. It
// sends go-redis's own log lines to log.
//
// ContextTimeoutEnabled makes go-redis bound every call by its context's
// deadline as well as by its own read and write timeouts (which bound
// calls without a deadline). Without it go-redis ignores the deadline: a
// stalled Redis would hold a cache lookup for the read timeout instead of
// the smaller of cache.redis_timeout and the query's remaining budget.
//
// go-redis retries a call that failed on a connection error or on a
// failover's replies (READONLY, LOADING, MASTERDOWN, CLUSTERDOWN,
// TRYAGAIN), up to three times with a growing backoff, never past that
// deadline; a Cluster client follows MOVED and ASK. A Sentinel client
// learns of a failover from the Sentinels' +switch-master announcement
// and drops its connections to the old master.
func newRedis(c config.Redis, log *zap.Logger) (redis.UniversalClient, error) {
	redis.SetLogger(redisLogger{log.Named("redis")})
	tlsConfig, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 c.Addresses(),
		MasterName:            c.MasterName,
		IsClusterMode:         c.Cluster,
		Username:              c.Username,
		Password:              c.Password,
		SentinelUsername:      c.SentinelUsername,
		SentinelPassword:      c.SentinelPassword,
		DB:                    c.DB,
		TLSConfig:             tlsConfig,
		ContextTimeoutEnabled: true,
	}), nil
}

// redisLogger is go-redis's Logging on zap. go-redis gives its lines no
// level; the ones it prints (failed dials, connections it drops, pub/sub
// reconnections, Sentinel failovers) are warnings.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.WarnLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
