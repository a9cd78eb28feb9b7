package main

import (
	"context"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/jobs"
	"github.com/sloproxy/sloproxy/proxy"
)

// startJobs starts the batch jobs' manager, its records in Redis or in
// the data directory, and resumes this proxy's running jobs. A proxy is
// named in its jobs' records by its host and configured admin address:
// the same after a restart, distinct among proxies sharing Redis.
func startJobs(ctx context.Context, cfg *config.Config, rdb *redis.Client, local *dataDir, p *proxy.Proxy, reg prometheus.Registerer,
	log *zap.Logger) (*jobs.Manager, error) {
	var store jobs.Store
	if rdb != nil {
		store = jobs.NewRedis(rdb, cfg.Redis.Prefix)
	} else {
		var err error
		if store, err = local.jobs(); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname() // "" names this host as well as any
	m := jobs.NewManager(jobs.Options{Store: store, Predictor: p, Owner: host + "/" + cfg.Admin.Listen, Registerer: reg, Logger: log.Named("jobs")})
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}
