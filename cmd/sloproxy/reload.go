package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/config"
	"github.com/sloproxy/sloproxy/state"
)

// reloadSettle is how long the reloader waits after a change of the file
// before reading it: an editor's save is several events (truncate, write,
// rename), and reading between them would see half a file.
const reloadSettle = 200 * time.Millisecond

// reloader reads the configuration file again on SIGHUP and when the file
// changes, and applies it only when all of it is valid: the apps' SLO
// and selection policies at once (see proxy.Proxy.ApplyPolicies and
// ApplySelection), and the apps whose
// settings changed since the last good file into the state. Settings that
// need a restart (listeners, Redis, runtimes, cache, limits, logging) are
// named in a warning and not applied.
type reloader struct {
	path     string
	log      *zap.Logger
	store    *state.Store
	policies func(*config.Config) // applies the apps' policies
	current  *config.Config       // the last file applied

	ok   prometheus.Gauge
	last prometheus.Gauge
}

func newReloader(path string, cfg *config.Config, store *state.Store, policies func(*config.Config), reg prometheus.Registerer,
	log *zap.Logger) *reloader {
	r := &reloader{path: path, log: log, store: store, policies: policies, current: cfg,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sloproxy_config_last_reload_successful",
			Help: "1 when the last reload of the configuration file applied it, 0 when the file was invalid and the previous one stayed.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sloproxy_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last applied, start included, in seconds since the epoch.",
		}),
	}
	reg.MustRegister(r.ok, r.last)
	r.ok.Set(1)
	r.last.SetToCurrentTime()
	return r
}

// Run reloads on each signal from hup and each change of the file until
// ctx is done. Without a working file watcher it still reloads on SIGHUP.
func (r *reloader) Run(ctx context.Context, hup <-chan os.Signal) {
	var changed <-chan fsnotify.Event
	var watchErrs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		r.log.Warn("config: cannot watch the file; reloading on SIGHUP only", zap.Error(err))
	} else {
		defer w.Close()
		// The directory, not the file: editors and config-map updates
		// replace the file, which ends a watch on the file itself.
		if err := w.Add(filepath.Dir(r.path)); err != nil {
			r.log.Warn("config: cannot watch the file's directory; reloading on SIGHUP only", zap.Error(err))
		} else {
			changed, watchErrs = w.Events, w.Errors
		}
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("config: SIGHUP: reloading", zap.String("file", r.path))
			r.reload(ctx)
		case ev := <-changed:
			if filepath.Clean(ev.Name) == filepath.Clean(r.path) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				settle.Reset(reloadSettle)
			}
		case err := <-watchErrs:
			r.log.Warn("config: file watcher", zap.Error(err))
		case <-settle.C:
			r.log.Info("config: the file changed: reloading", zap.String("file", r.path))
			r.reload(ctx)
		}
	}
}

// reload applies the file if all of it is valid.
func (r *reloader) reload(ctx context.Context) {
	cfg, err := config.Load(r.path)
	if err != nil {
		r.ok.Set(0)
		r.log.Error("config: reload refused; the previous configuration stays", zap.Error(err))
		return
	}
	if err := r.apply(ctx, cfg); err != nil {
		r.ok.Set(0)
		r.log.Error("config: reload failed while applying; the SLO policies were applied, the state may be partly updated", zap.Error(err))
		return
	}
	r.ok.Set(1)
	r.last.SetToCurrentTime()
}

// apply makes cfg the running configuration.
func (r *reloader) apply(ctx context.Context, cfg *config.Config) error {
	if restart := restartOnly(r.current, cfg); len(restart) > 0 {
		r.log.Warn("config: these settings change only with a restart; kept the running ones", zap.Strings("settings", restart))
	}
	r.policies(cfg)
	prev := map[string]state.App{}
	for _, a := range r.current.Apps {
		prev[a.Name] = a.App()
	}
	var updated []string
	for _, a := range cfg.Apps {
		if old, ok := prev[a.Name]; ok && !reflect.DeepEqual(old, a.App()) {
			// PutApp keeps the selection and features specs set through
			// the admin API, which the file does not hold, and refuses an
			// input type the features spec cannot fill.
			if err := r.store.PutApp(ctx, a.App()); err != nil {
				return fmt.Errorf("app %s: %w", a.Name, err)
			}
			updated = append(updated, a.Name)
		}
	}
	if _, err := cfg.Seed(ctx, r.store); err != nil {
		return err
	}
	r.current = cfg
	r.log.Info("config: reloaded", zap.Int("apps", len(cfg.Apps)), zap.Strings("apps_updated", updated))
	return nil
}

// restartOnly names the settings that differ between a and b and apply
// only at start.
func restartOnly(a, b *config.Config) []string {
	var out []string
	// The runtimes' prices apply on reload (watchConfig): compare the rest.
	ar, br := a.Runtimes, b.Runtimes
	ar.Process.Cost, ar.Docker.Cost, ar.Swarm.Cost = config.Cost{}, config.Cost{}, config.Cost{}
	br.Process.Cost, br.Docker.Cost, br.Swarm.Cost = config.Cost{}, config.Cost{}, config.Cost{}
	for name, pair := range map[string][2]any{
		"listen": {a.Listen, b.Listen}, "admin": {a.Admin, b.Admin}, "redis": {a.Redis, b.Redis}, "data_dir": {a.DataDir, b.DataDir},
		"limits": {a.Limits, b.Limits}, "runtimes": {ar, br}, "oip": {a.OIP, b.OIP}, "grpc": {a.GRPC, b.GRPC},
		"log": {a.Log, b.Log}, "cache": {a.Cache, b.Cache}, "feedback": {a.Feedback, b.Feedback},
		"autoscaler": {a.Autoscaler, b.Autoscaler},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
