// Package proxy is the query side of sloproxy: the REST query API
// (POST /apps/{app}/predict, and Clipper's POST /{app}/predict), the Open
// Inference Protocol v2, and /metrics. A query's deadline is its arrival
// plus its app's SLO; it travels in the request's context through the
// dispatcher to the RPC frame. When no model answers by then, the app's
// default output is returned, flagged, with the reason: never a late answer.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/answered"
	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/proxy/internal/route"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// Options configure a Proxy. The zero value of each field has the meaning
// its comment gives.
type Options struct {
	// Store is the shared state; required.
	Store *state.Store
	// Registry receives the metrics and is served at /metrics. nil means a
	// fresh registry.
	Registry *prometheus.Registry
	// Logger receives errors, one line each with the query id. nil means
	// no logs.
	Logger *zap.Logger
	// MaxBodyBytes bounds request bodies. 0 means 4 MiB.
	MaxBodyBytes int64
	// MaxInputBatch bounds the inputs of one request. 0 means 1024.
	MaxInputBatch int
	// DefaultBatchSize is the batch size of model versions that set none.
	// 0 means 32.
	DefaultBatchSize int
	// OIPTimeout is the deadline of an OIP infer request without a timeout
	// parameter, for a model no app links. 0 means 1 s.
	OIPTimeout time.Duration
	// Readiness is what GET /v2/health/ready requires; "" means
	// ReadyEveryApp.
	Readiness Readiness
	// Cache is the prediction cache, started by its owner. nil means
	// none: every query reaches a model.
	Cache *cache.Cache
	// Policies are the apps' SLO policies (shed policy, priority,
	// controller); a reload replaces them (see ApplyPolicies). nil means
	// slo.DefaultPolicy for every app.
	Policies *slo.Table
	// Selection holds the apps' model selection policies; a reload sets
	// their specs. nil means a table over an in-memory state, whose
	// metrics go to Registry.
	Selection *selection.Table
	// RecentQueries is how many answered queries the proxy remembers for
	// feedback. 0 means answered.DefaultSize.
	RecentQueries int
	// SharedQueries, with its Redis set, keeps the answered queries in
	// Redis too, so that feedback may reach any proxy sharing it.
	SharedQueries SharedQueries
	// Features holds the apps' feature lookups; a reload replaces their
	// specs. nil means no app looks features up.
	Features *features.Table
	// Dispatch is the template for each model version's dispatcher; its
	// Model, Version, InputType, MaxBatch and Metrics are set per version.
	Dispatch dispatch.Options
	// RPCKey derives the RPC secret of each swarm version
	// (rpc.DeriveSecret), which the dispatcher proves to its replicas when
	// it connects (docs/rpc.md, "Authentication"). Nil means the proxy has
	// none: swarm replicas refuse it, and their queries get the default
	// output.
	RPCKey []byte
}

// SharedQueries keeps the answered queries in Redis too, so that their
// feedback may reach any proxy that shares it, not only the one that
// answered (see package answered).
type SharedQueries struct {
	// Redis holds them; nil means this proxy's memory only.
	Redis redis.UniversalClient
	// Prefix starts their keys.
	Prefix string
	// TTL is how long each is kept. 0 means answered.DefaultSharedTTL.
	TTL time.Duration
	// Size is how many Redis keeps, across the proxies sharing it. 0
	// means answered.DefaultSharedSize.
	Size int
}

// Proxy serves queries. Create it with New, run it with Run, serve its
// Handler.
type Proxy struct {
	opts    Options
	log     *zap.Logger
	pool    *pool
	metrics *metrics
	attain  *attainment
	sel     *selection.Table
	memory  *answered.Memory // the answered queries awaiting feedback; its writer runs in Run
	choices sync.Map         // arm → the selection.Choice of that arm alone (see onlyChoice)
	// background holds the shadow queries, each bounded by its query's
	// deadline; Run waits for them.
	background sync.WaitGroup
	router     *mux.Router  // every endpoint
	handler    http.Handler // the router behind the query path's fast path
	ready      atomic.Bool

	idPrefix string        // random per process: ids are unique across proxies
	idSeq    atomic.Uint64 // then a counter
}

// New returns a proxy over opts.Store.
func New(opts Options) *Proxy {
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.MaxInputBatch <= 0 {
		opts.MaxInputBatch = 1024
	}
	if opts.DefaultBatchSize <= 0 {
		opts.DefaultBatchSize = 32
	}
	if opts.OIPTimeout <= 0 {
		opts.OIPTimeout = time.Second
	}
	if opts.Policies == nil {
		opts.Policies = slo.NewTable(nil)
	}
	if opts.Selection == nil {
		opts.Selection = selection.NewTable(selection.Options{Registerer: opts.Registry, Logger: opts.Logger})
	}
	opts.Dispatch.Metrics = dispatch.NewMetrics(opts.Registry)
	if opts.Dispatch.Logger == nil {
		opts.Dispatch.Logger = opts.Logger
	}
	var prefix [8]byte
	_, _ = rand.Read(prefix[:])
	p := &Proxy{
		opts:    opts,
		log:     opts.Logger,
		pool:    newPool(opts.Dispatch, opts.RPCKey, opts.DefaultBatchSize, opts.Policies, opts.Logger),
		metrics: newMetrics(opts.Registry),
		attain:  &attainment{policies: opts.Policies, apps: map[string]*appSLO{}},
		sel:     opts.Selection,
		memory: answered.New(answered.Options{Size: opts.RecentQueries, Redis: opts.SharedQueries.Redis, Prefix: opts.SharedQueries.Prefix,
			TTL: opts.SharedQueries.TTL, SharedSize: opts.SharedQueries.Size, Registry: opts.Registry, Logger: opts.Logger}),
		idPrefix: hex.EncodeToString(prefix[:]) + "-",
	}
	opts.Registry.MustRegister(p.attain, p.pool, memoryCollector{p.memory})
	p.router = p.routes()
	p.handler = p.withFastPredict(p.router)
	return p
}

// ApplyPolicies replaces the apps' SLO policies at once, as a
// configuration reload does: queries arriving after it use the new ones,
// and model versions whose batching changed get new controllers; the
// others keep theirs, with what they learned.
func (p *Proxy) ApplyPolicies(policies map[string]slo.Policy) {
	p.opts.Policies.Set(policies)
	p.pool.kick()
}

// ApplySelection replaces the apps' selection specs at once, as a
// configuration reload does; see selection.Table.Set. What the policies
// learned stays in the shared state.
func (p *Proxy) ApplySelection(specs map[string]selection.Spec) { p.sel.Set(specs) }

// Handler serves the query API, the OIP endpoints and /metrics.
func (p *Proxy) Handler() http.Handler { return p.handler }

// Run keeps one dispatcher per model version in the state until ctx is
// done, then closes them after their queries in flight. Stop the HTTP
// server before cancelling ctx, so that queries in flight are answered.
func (p *Proxy) Run(ctx context.Context) {
	p.ready.Store(true)
	defer p.ready.Store(false)
	var writer sync.WaitGroup
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	writer.Go(func() { p.memory.Run(wctx) })
	defer writer.Wait()
	defer stop() // after the shadows, whose answers it writes too
	defer p.background.Wait()
	p.pool.run(ctx, p.opts.Store, p.opts.Features.Prune) // a deleted app's lookup goes with it
}

func (p *Proxy) routes() *mux.Router {
	// SkipClean: a path holding "..", "//" or an encoded slash is routed
	// as sent, to a JSON 404, instead of being answered with a redirect
	// that has no body and turns a POST into a GET.
	r := mux.NewRouter().SkipClean(true)
	r.Handle("/metrics", promhttp.HandlerFor(p.opts.Registry, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	p.oipRoutes(r)
	predict := func(w http.ResponseWriter, r *http.Request) { p.servePredict(w, r, mux.Vars(r)["app"]) }
	r.HandleFunc("/apps/{app}/predict", predict).Methods(http.MethodPost)
	r.HandleFunc("/{app}/predict", predict).Methods(http.MethodPost)
	r.HandleFunc("/apps/{app}/feedback", p.serveFeedback).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(ErrNotFound, "no endpoint %s %s", clip.String(r.Method), clip.String(r.URL.Path)))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		allowed := strings.Join(route.Allowed(r, req), ", ")
		w.Header().Set("Allow", allowed)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write(append(appendString([]byte(`{"error":`),
			fmt.Sprintf("method %s not allowed on %s; use %s", clip.String(req.Method), clip.String(req.URL.Path), allowed)), "}\n"...))
	})
	return r
}

// withFastPredict sends POST /apps/{app}/predict and /{app}/predict
// straight to the predict handler, and everything else to next (the
// router, which serves those paths too when they come in another form).
// The router attaches path variables by copying the request, a cost the
// query path need not pay.
func (p *Proxy) withFastPredict(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if app, ok := predictApp(r.URL.Path); ok {
				p.servePredict(w, r, app)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// predictApp returns the app of a predict path: /apps/{app}/predict or
// /{app}/predict, {app} one non-empty path segment.
func predictApp(path string) (string, bool) {
	rest, ok := strings.CutSuffix(path, "/predict")
	if !ok || len(rest) < 2 || rest[0] != '/' {
		return "", false
	}
	rest = rest[1:]
	if app, ok := strings.CutPrefix(rest, "apps/"); ok && app != "" && !strings.Contains(app, "/") {
		return app, true
	}
	if !strings.Contains(rest, "/") {
		return rest, true
	}
	return "", false
}

// newQueryID returns an id unique across proxies: a random per-process
// prefix and a counter.
func (p *Proxy) newQueryID() string {
	var b [40]byte
	n := copy(b[:], p.idPrefix)
	return string(appendHex(b[:n], p.idSeq.Add(1)))
}

func appendHex(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v&15]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}
