package main

// `sloproxy serve`: wires the packages into one process and owns their
// lifecycles. The listeners are bound first, so that a port in use fails
// before anything starts; then come the state, the runtimes and the proxy,
// and the listeners serve last. Shutdown runs it backwards: listeners stop
// accepting and answer what they hold, then the dispatchers close, then
// the runtimes stop their children.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sloproxy/sloproxy/autoscale"
	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/process"
	"github.com/sloproxy/sloproxy/containers/profile"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/containers/swarm"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/proxy/admin"
	"github.com/sloproxy/sloproxy/proxy/oipgrpc"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// shutdownGrace bounds how long the listeners may take to answer the
// requests they hold after a stop signal. Every query has a deadline (its
// app's SLO), so in practice they finish far sooner.
const shutdownGrace = 30 * time.Second

// liveHeapMetrics exports the runtime's /gc/heap/live:bytes and
// /gc/heap/goal:bytes as go_gc_heap_live_bytes and go_gc_heap_goal_bytes.
var liveHeapMetrics = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/(live|goal):bytes$`)}

// runServe runs `sloproxy serve --config FILE` until SIGINT or SIGTERM.
func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the YAML configuration `file` (required)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: sloproxy serve --config FILE\n\nRuns the proxy: its query and admin listeners, and the model versions the\nconfiguration and the state ask for. Stops on SIGINT (Ctrl-C) or SIGTERM.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return helpIsNoError(err)
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: sloproxy serve --config FILE")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	stopWithGoRun()
	// Once stopping, a second signal kills at once instead of waiting out
	// the shutdown grace.
	context.AfterFunc(ctx, stop)
	return serve(ctx, cfg, *path, filepath.Dir(*path), stderr, nil)
}

// listening receives the bound query and admin addresses once both
// listeners accept; tests use it to learn the ports of ":0" listeners.
type listening func(query, admin string)

// serve runs the proxy described by cfg until ctx is done, then shuts it
// down and returns nil. path is cfg's file, reloaded on SIGHUP and when it
// changes; empty means none (SIGHUP is then logged and ignored). dir is
// where relative process commands resolve when cfg names no
// runtimes.process.dir.
func serve(ctx context.Context, cfg *config.Config, path, dir string, logOut io.Writer, ready listening) error {
	log, err := newLogger(cfg.Log, logOut)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	// The listeners first: a port in use fails before anything starts
	// model processes or writes to the shared state.
	queryLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen (query API): %w", err)
	}
	defer queryLn.Close()
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	defer adminLn.Close()
	var grpcLn net.Listener
	if cfg.GRPC.Listen != "" {
		if grpcLn, err = net.Listen("tcp", cfg.GRPC.Listen); err != nil {
			return fmt.Errorf("grpc.listen: %w", err)
		}
		defer grpcLn.Close()
	}

	// SIGHUP reloads the configuration (see reloader); caught from here
	// on, since by default it would kill the proxy without draining.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var rdb redis.UniversalClient
	if cfg.Redis.Configured() {
		if rdb, err = newRedis(cfg.Redis, log); err != nil {
			return err
		}
		defer func() { _ = rdb.Close() }() // last: the store and the cache use it
	}
	// Without Redis, the state, what the policies learn and a generated
	// admin token live in the data directory.
	var local *dataDir
	if rdb == nil {
		if local, err = openDataDir(cfg, dir); err != nil {
			return err
		}
		defer func() { _ = local.Close() }() // after the store and the policies
		log.Info("keeping the state in the data directory", zap.String("data_dir", local.path))
	}
	token, err := adminToken(cfg, local, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	// Beside the usual Go metrics, the live heap (what the last collection
	// marked) and the collector's goal: the heap the configured bounds
	// hold, without the rise and fall between collections.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(liveHeapMetrics)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The feature lookups come before the state, which checks every
	// change of an app against them.
	lookups := features.NewTable(features.Options{Redis: rdb, Registerer: reg})
	defer func() { _ = lookups.Close() }()
	if err := lookups.Set(cfg.Features()); err != nil {
		return err
	}
	store, err := openStore(ctx, cfg, rdb, local, lookups, log)
	if err != nil {
		return err
	}
	defer func() { _ = store.Close() }()
	kept, err := cfg.Seed(ctx, store)
	if err != nil {
		return fmt.Errorf("config: seeding the state: %w", err)
	}
	if len(kept) > 0 {
		log.Info("the shared state already had these; kept the state's, not the config file's", zap.Strings("kept", kept))
	}

	runtimeMetrics := runtime.NewMetrics(reg, store)
	runtimes := map[state.RuntimeKind]runtime.Runtime{state.RuntimeExternal: runtime.External{}}
	if cfg.Runtimes.Process.Enabled {
		procDir := cfg.Runtimes.Process.Dir
		if procDir == "" {
			procDir = dir
		}
		procs := process.New(process.Options{BasePort: cfg.Runtimes.Process.PortBase, Dir: procDir, Logger: log.Named("process"), Metrics: runtimeMetrics,
			PassEnv: cfg.Runtimes.Process.PassEnv})
		defer func() { _ = procs.Close() }() // stops the children, last
		runtimes[state.RuntimeProcess] = procs
	}
	if d := cfg.Runtimes.Docker; d.Enabled {
		containers, err := docker.New(ctx, docker.Options{Host: d.Host, Owner: d.Owner, Network: d.Network, WritableRoot: d.WritableRoot,
			StartTimeout: d.StartTimeout, DrainTimeout: d.DrainTimeout, Logger: log.Named("docker"), Metrics: runtimeMetrics})
		if err != nil {
			return fmt.Errorf("runtimes.docker: %w", err)
		}
		// Closing leaves the containers running: the next start adopts them.
		defer func() { _ = containers.Close() }()
		runtimes[state.RuntimeDocker] = containers
	}
	if sw := cfg.Runtimes.Swarm; sw.Enabled {
		services, err := swarm.New(ctx, swarm.Options{Host: sw.Host, Owner: sw.Owner, RPCKey: sw.Key(), Network: sw.Network,
			Constraints: sw.Constraints, Preferences: sw.Preferences, GPUResource: sw.GPUResource, WritableRoot: sw.WritableRoot,
			StartTimeout: sw.StartTimeout, Logger: log.Named("swarm")})
		if err != nil {
			return fmt.Errorf("runtimes.swarm: %w", err)
		}
		// Closing leaves the services running: the next start adopts them.
		defer func() { _ = services.Close() }()
		runtimes[state.RuntimeSwarm] = services
	}
	mgr := runtime.NewManager(store, runtime.Options{Runtimes: runtimes, Logger: log.Named("runtime"), MaxReplicas: cfg.Limits.MaxReplicas})
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = mgr.Close() }()

	predictions, purge, err := openCache(ctx, cfg, rdb, reg, store, log)
	if err != nil {
		return err
	}
	if predictions != nil {
		defer func() { _ = predictions.Close() }()
	}
	var learned selection.State
	if rdb != nil {
		learned = selection.NewRedis(rdb, cfg.Redis.Prefix+"selection:")
	} else if learned, err = local.learned(); err != nil {
		return err
	}
	selections := selection.NewTable(selection.Options{State: learned, Registerer: reg, Logger: log.Named("selection")})
	selections.Set(cfg.Selections())
	p := proxy.New(proxy.Options{
		Features:         lookups,
		Selection:        selections,
		Cache:            predictions,
		Store:            store,
		Registry:         reg,
		Logger:           log.Named("proxy"),
		MaxBodyBytes:     cfg.Limits.MaxBodyBytes,
		MaxInputBatch:    cfg.Limits.MaxInputBatch,
		DefaultBatchSize: cfg.Limits.DefaultBatchSize,
		OIPTimeout:       cfg.OIP.DefaultTimeout,
		Readiness:        proxy.Readiness(cfg.OIP.Readiness),
		Policies:         slo.NewTable(cfg.Policies()),
		RecentQueries:    cfg.Feedback.Recent,
		SharedQueries:    sharedQueries(cfg, rdb),
		RPCKey:           cfg.Runtimes.Swarm.Key(),
	})
	// The autoscaler writes replica counts to the store: it stops before
	// the store closes. With autoscaler.enabled off it only counts
	// replica time and cost, which the admin API's usage reports.
	scaler := autoscale.New(store, p, autoscale.NewMetrics(reg), autoscale.Options{MaxReplicas: cfg.Limits.MaxReplicas,
		Pricing: cfg.Pricing(), CountOnly: !cfg.Autoscaler.Enabled, Logger: log.Named("autoscale")})
	if err := scaler.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = scaler.Close() }()
	// The reloader writes to the store: it stops before the store closes,
	// also when a failed listener, not ctx, ends the run.
	var reloading sync.WaitGroup
	hupCtx, endHup := context.WithCancel(ctx)
	defer func() { endHup(); reloading.Wait() }()
	reloading.Go(func() { watchConfig(hupCtx, path, cfg, store, p, lookups, scaler, reg, hup, log.Named("config")) })
	// The dispatchers outlive the listeners: runCtx ends only after the
	// HTTP servers have answered what they hold.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	ran := make(chan struct{})
	go func() { defer close(ran); p.Run(runCtx) }()
	defer func() { cancelRun(); <-ran }()
	// The jobs stop, at a checkpoint, before the dispatchers close.
	batchJobs, err := startJobs(ctx, cfg, rdb, local, p, reg, log)
	if err != nil {
		return err
	}
	defer batchJobs.Close()

	// Both listeners answer a handler's panic with a JSON 500 and log it
	// with its stack, instead of dropping the connection.
	recoverer := proxy.NewRecoverer(reg, log.Named("http"))
	adminHandler := admin.NewHandler(store, admin.Options{Token: token, Logger: log.Named("admin"), Purge: purge, Selection: p.SelectionStatus, Features: lookups, Problem: mgr.Problem,
		Usage: func(model, version string) (admin.Usage, bool) {
			u, perK, ok := scaler.Usage(model, version)
			return admin.NewUsage(u.ReplicaSeconds, u.Cost, perK), ok
		},
		Price:       scaler.Price,
		MaxReplicas: cfg.Limits.MaxReplicas, Jobs: batchJobs, Profiler: profile.Profiler{Encode: proxy.EncodeInput, DefaultBatch: cfg.Limits.DefaultBatchSize, RPCKey: cfg.Runtimes.Swarm.Key()}})
	servers := []*http.Server{
		newServer(recoverer.Wrap("query", p.Handler()), log),
		newServer(recoverer.Wrap("admin", adminHandler), log),
	}
	failed := make(chan error, len(servers)+1)
	var serving sync.WaitGroup
	for i, ln := range []net.Listener{queryLn, adminLn} {
		serving.Go(func() {
			if err := servers[i].Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		})
	}
	var grpcServer *oipgrpc.Server
	if grpcLn != nil {
		grpcServer = oipgrpc.New(p, oipgrpc.Options{MaxMessageBytes: int(cfg.Limits.MaxBodyBytes), MaxInputBatch: cfg.Limits.MaxInputBatch,
			Logger: log.Named("grpc")})
		serving.Go(func() {
			if err := grpcServer.GRPC().Serve(grpcLn); err != nil {
				failed <- fmt.Errorf("grpc: %w", err)
			}
		})
		log.Info("serving the Open Inference Protocol over gRPC", zap.String("grpc", grpcLn.Addr().String()))
	}
	log.Info("serving", zap.String("query", queryLn.Addr().String()), zap.String("admin", adminLn.Addr().String()),
		zap.Strings("redis", cfg.Redis.Addresses()), zap.Int("apps", len(store.Snapshot().Apps())))
	if ready != nil {
		ready(queryLn.Addr().String(), adminLn.Addr().String())
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		watchStartup(watchCtx, p.VersionReady, store, mgr.Problem, startupLogInterval, log.Named("startup"))
	}()
	defer func() { stopWatch(); <-watching }()

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: no new connections; answering the requests in flight")
	case serveErr = <-failed:
		log.Error("a listener failed; stopping", zap.Error(serveErr))
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutCtx); err != nil {
			log.Warn("shutdown: requests still open after the grace period", zap.Error(err))
		}
	}
	if grpcServer != nil {
		grpcServer.Shutdown(shutCtx)
	}
	serving.Wait()
	log.Info("stopped serving; closing dispatchers and stopping model processes")
	return serveErr
}

// watchConfig reloads the configuration at path on each SIGHUP and change
// of the file until ctx is done; with no path it logs and ignores SIGHUP.
func watchConfig(ctx context.Context, path string, cfg *config.Config, store *state.Store, p *proxy.Proxy, lookups *features.Table,
	scaler *autoscale.Autoscaler, reg prometheus.Registerer, hup <-chan os.Signal, log *zap.Logger) {
	if path != "" {
		apply := func(c *config.Config) {
			p.ApplyPolicies(c.Policies())
			p.ApplySelection(c.Selections())
			if err := lookups.Set(c.Features()); err != nil {
				log.Error("config: features not applied", zap.Error(err))
			}
			scaler.SetPricing(c.Pricing())
		}
		newReloader(path, cfg, store, apply, reg, log).Run(ctx, hup)
		return
	}
	for {
		select {
		case <-hup:
			log.Warn("SIGHUP ignored: this proxy was not started from a configuration file")
		case <-ctx.Done():
			return
		}
	}
}

// newServer returns an HTTP server with timeouts that bound slow clients:
// headers and bodies must arrive promptly; responses are bounded by the
// queries' own deadlines. What net/http itself reports (a failed TLS
// handshake, a connection error) is a warning: the handlers' panics never
// reach it (see proxy.Recoverer).
func newServer(h http.Handler, log *zap.Logger) *http.Server {
	errorLog, _ := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel) // fails only for a level zap does not know
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}
}

// openStore opens the state on rdb, or in local when rdb is nil, and
// starts following its changes; every change of an app must fit its
// feature lookup in lookups (features.Table.CheckApp).
func openStore(ctx context.Context, cfg *config.Config, rdb redis.UniversalClient, local *dataDir, lookups *features.Table, log *zap.Logger) (*state.Store, error) {
	var backend state.Backend
	if rdb != nil {
		backend = state.NewRedis(rdb, state.RedisOptions{Prefix: cfg.Redis.Prefix, Logger: log.Named("state"),
			WaitReplicas: cfg.Redis.WaitReplicas, WaitTimeout: cfg.Redis.WaitTimeout})
	} else {
		var err error
		if backend, err = local.store(); err != nil {
			return nil, err
		}
	}
	store := state.NewStore(backend, state.Options{Logger: log.Named("state"), CheckApp: lookups.CheckApp})
	if err := store.Start(ctx); err != nil {
		return nil, err // it names the state
	}
	return store, nil
}

// sharedQueries keeps answered queries in Redis for feedback through any
// proxy, when there is a Redis and the config asks for it.
func sharedQueries(cfg *config.Config, rdb redis.UniversalClient) proxy.SharedQueries {
	if rdb == nil || !cfg.Feedback.Shared {
		return proxy.SharedQueries{}
	}
	return proxy.SharedQueries{Redis: rdb, Prefix: cfg.Redis.Prefix, TTL: cfg.Feedback.SharedTTL, Size: cfg.Feedback.SharedRecent}
}

// openCache starts the prediction cache the config asks for (nil when it
// is disabled), with L2 on rdb when there is one, and returns the admin
// API's purge for it.
func openCache(ctx context.Context, cfg *config.Config, rdb redis.UniversalClient, reg prometheus.Registerer, store *state.Store,
	log *zap.Logger) (*cache.Cache, func(ctx context.Context, app, model string) error, error) {
	if !cfg.Cache.Enabled {
		return nil, nil, nil
	}
	opts := cache.Options{L1Bytes: cfg.Cache.L1Bytes, DefaultTTL: cfg.Cache.DefaultTTL, Prefix: cfg.Redis.Prefix, Timeout: cfg.Cache.RedisTimeout,
		Registerer: reg, Logger: log.Named("cache")}
	if rdb != nil {
		opts.Redis = rdb
	}
	c, err := cache.New(opts)
	if err != nil {
		return nil, nil, err
	}
	// Not ctx: fills made while the proxy drains must still reach Redis;
	// Close, after the dispatchers, ends the cache's work.
	if err := c.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, nil, err
	}
	purge := func(ctx context.Context, app, model string) error {
		models := []string{model}
		if app != "" {
			models = store.Snapshot().ModelsOf(app)
		}
		for _, m := range models {
			if err := c.Purge(ctx, m); err != nil {
				return fmt.Errorf("%w (the cache's Redis): %w", state.ErrUnavailable, err)
			}
		}
		return nil
	}
	return c, purge, nil
}

// newLogger builds the zap logger the config asks for, writing to out.
func newLogger(c config.Log, out io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if c.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.Lock(zapcore.AddSync(out)), level)), nil
}

// randomToken returns 128 random bits in hex.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
