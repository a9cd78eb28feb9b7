package main

// Start-up progress: which model versions the proxy still waits for, and
// why, so that a first start that compiles or pulls nothing for a minute
// does not look hung.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/state"
)

// startupLogInterval is how often the start-up watch repeats what it waits for.
const startupLogInterval = 5 * time.Second

// watchStartup logs the current versions of the models in store that are
// not ready on this proxy, with what runs them and why that can take time,
// then again every interval until each is ready (logged once, with the
// time it took) or ctx is done. notReady says why a version cannot answer
// on this proxy yet, "" once it can (proxy.VersionReady, the rule of
// /v2/models/{m}/versions/{v}/ready). problem returns the runtime's last
// error for a version ("" when none).
func watchStartup(ctx context.Context, notReady func(state.ModelVersion) string, store *state.Store, problem func(model, version string) string,
	interval time.Duration, log *zap.Logger) {
	start := time.Now()
	waiting := map[string]state.ModelVersion{}
	for _, m := range store.Snapshot().Models() {
		if v, ok := store.Snapshot().Current(m.Name); ok {
			waiting[v.Model+":"+v.Version] = v
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for first := true; ; first = false {
		for name, v := range waiting {
			why := notReady(v)
			if why == "" {
				delete(waiting, name)
				if !first {
					log.Info("model ready", zap.String("model", name), zap.Duration("after", time.Since(start).Round(time.Second)))
				}
				continue
			}
			fields := []zap.Field{zap.String("model", name), zap.String("runtime", string(v.Runtime.Kind)),
				zap.Duration("waited", time.Since(start).Round(time.Second)), zap.String("why", whyWait(v)), zap.String("state", why)}
			if p := problem(v.Model, v.Version); p != "" {
				fields = append(fields, zap.String("problem", p))
			}
			log.Info("waiting for a model to be ready; its apps answer their default output until then", fields...)
		}
		if len(waiting) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// whyWait says what the proxy waits for while v's replicas start.
func whyWait(v state.ModelVersion) string {
	switch v.Runtime.Kind {
	case state.RuntimeProcess:
		cmd := strings.Join(v.Runtime.Command, " ")
		if len(v.Runtime.Command) > 1 && v.Runtime.Command[0] == "go" && v.Runtime.Command[1] == "run" {
			return fmt.Sprintf("its process (%s) compiles the model before it listens: seconds with a warm Go build cache, a minute or more with a cold one", cmd)
		}
		return fmt.Sprintf("its process (%s) has not answered on its port yet", cmd)
	case state.RuntimeDocker:
		return fmt.Sprintf("its containers (image %s) have not answered their warm-up request yet", v.Runtime.Image)
	case state.RuntimeSwarm:
		return fmt.Sprintf("its swarm tasks (image %s) have not answered their warm-up request yet", v.Runtime.Image)
	case state.RuntimeExternal:
		return fmt.Sprintf("no replica at %s answers yet", strings.Join(v.Runtime.Addresses, ", "))
	}
	return "its replicas have not answered yet"
}
