package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/proxy/internal/route"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// Options configure the admin handler.
type Options struct {
	// Token is the bearer token every request but the health check must
	// carry. Required: with an empty Token no request is authorized (the
	// handler fails closed); the serve command generates and logs a token
	// when the configuration names none.
	Token string
	// Logger receives one line per change made through the API and the
	// errors answered with a 5xx status. Nil means none.
	Logger *zap.Logger
	// Purge removes the cached predictions of app's models (when app is
	// set) or of every version of model (when model is set); exactly one
	// is set. Nil means there is no cache to purge: POST
	// /api/v1/cache/purge answers 501.
	Purge func(ctx context.Context, app, model string) error
	// Selection returns what app's model selection policy has learned or
	// decided (shares, canaries rolled back). Nil means GET
	// /api/v1/apps/{app}/selection answers 501.
	Selection func(ctx context.Context, app string) (selection.Status, error)
	// Features are the proxy's feature lookups, which
	// /api/v1/apps/{app}/features shows and checks specs against. Nil
	// means that endpoint answers 501. Whether an app's spec fits it is
	// the Store's check (state.Options.CheckApp: features.Table.CheckApp).
	Features FeatureTable
	// Problem says why this proxy's runtimes could not run a model version
	// on their last attempt (a missing image, a container that exits at
	// start), answered as the version's "problem"; "" when there is none.
	// Nil means no version has one: this proxy runs no runtime, or its
	// problems are not reported.
	Problem func(model, version string) string
	// Usage says what a model version's replicas used, answered as the
	// version's "usage". Nil, or ok false, means none is shown.
	Usage func(model, version string) (u Usage, ok bool)
	// MaxReplicas bounds the replica count a version may be registered or
	// scaled to (the configuration's limits.max_replicas); a larger count
	// is answered 400 naming the limit. 0 means no bound beyond the
	// state's own checks.
	MaxReplicas int
	// Jobs runs offline batch jobs. Nil means the /api/v1/jobs endpoints
	// answer 501.
	Jobs JobRunner
	// Profiler profiles model versions: POST .../profile, and the gate
	// that profiles a version before a link, a new current version or a
	// selection spec moves an app's traffic to it. Nil means neither: the
	// profile endpoint answers 501 and nothing is gated.
	Profiler Profiler
	// ReplicaWait is how long a profile waits for the version's first
	// live replica before it fails; 0 means DefaultReplicaWait.
	ReplicaWait time.Duration
	// Price is the price of one replica of a model version for an hour,
	// from the cost settings; ok false means it has none. A profile's
	// answer prices its largest batch per app with it (cost_per_1k). Nil
	// means no version has a price.
	Price func(model, version string) (perReplicaHour float64, ok bool)
}

// The API's paths. Names in braces are path variables.
const (
	pathPrefix   = "/api/v1"
	pathHealthz  = pathPrefix + "/healthz"
	pathApps     = pathPrefix + "/apps"
	pathApp      = pathApps + "/{app}"
	pathLink     = pathApp + "/links/{model}"
	pathSelect   = pathApp + "/selection"
	pathFeatures = pathApp + "/features"
	pathModels   = pathPrefix + "/models"
	pathModel    = pathModels + "/{model}"
	pathCurrent  = pathModel + "/current"
	pathVersions = pathModel + "/versions"
	pathVersion  = pathVersions + "/{version}"
	pathReplicas = pathVersion + "/replicas"
	pathScale    = pathVersion + "/autoscale"
	pathProfile  = pathVersion + "/profile"
	pathPurge    = pathPrefix + "/cache/purge"
	pathJobs     = pathPrefix + "/jobs"
	pathJob      = pathJobs + "/{job}"
)

// maxBodyBytes bounds request bodies: the largest legitimate one, a
// version with its command line and environment, is a few KiB.
const maxBodyBytes = 1 << 20

// handler serves the admin API.
type handler struct {
	store *state.Store
	log   *zap.Logger
	purge func(ctx context.Context, app, model string) error
	sel   func(ctx context.Context, app string) (selection.Status, error)
	// features is Options.Features, nil for none.
	features FeatureTable
	router   *mux.Router
	// tokenHash is the SHA-256 of Options.Token, nil when it is empty.
	// Comparing hashes keeps the comparison constant-time even in the
	// token's length.
	tokenHash []byte

	// problem is Options.Problem, never nil.
	problem func(model, version string) string
	// usage is Options.Usage, never nil.
	usage func(model, version string) (Usage, bool)
	// maxReplicas is Options.MaxReplicas.
	maxReplicas int
	// jobs is Options.Jobs.
	jobs JobRunner
	// profiler is Options.Profiler, nil for none.
	profiler    Profiler
	replicaWait time.Duration // Options.ReplicaWait with its default
	// price is Options.Price, never nil.
	price func(model, version string) (float64, bool)
}

// NewHandler returns the admin API over store.
func NewHandler(store *state.Store, opts Options) http.Handler {
	return newHandler(store, opts)
}

func newHandler(store *state.Store, opts Options) *handler {
	h := &handler{store: store, log: opts.Logger, purge: opts.Purge, sel: opts.Selection, features: opts.Features, problem: opts.Problem,
		usage: opts.Usage, maxReplicas: opts.MaxReplicas, jobs: opts.Jobs, profiler: opts.Profiler}
	h.replicaWait = opts.ReplicaWait
	if h.replicaWait <= 0 {
		h.replicaWait = DefaultReplicaWait
	}
	h.price = opts.Price
	if h.price == nil {
		h.price = func(string, string) (float64, bool) { return 0, false }
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.problem == nil {
		h.problem = func(string, string) string { return "" }
	}
	if h.usage == nil {
		h.usage = func(string, string) (Usage, bool) { return Usage{}, false }
	}
	if opts.Token != "" {
		sum := sha256.Sum256([]byte(opts.Token))
		h.tokenHash = sum[:]
	}
	h.router = h.routes()
	return h
}

// routes registers every endpoint. docs/openapi-admin.yaml documents each;
// TestOpenAPIDocumentsEveryRoute checks that it does.
func (h *handler) routes() *mux.Router {
	// SkipClean: a path holding "..", "//" or an encoded slash is routed
	// as sent, to a JSON 404, never redirected (a redirect has no JSON
	// body, and clients follow it with a GET).
	r := mux.NewRouter().SkipClean(true)
	handle := func(method, path string, f func(w http.ResponseWriter, r *http.Request) error) {
		r.Handle(path, h.serve(f)).Methods(method)
	}
	handle(http.MethodGet, pathHealthz, h.healthz)

	handle(http.MethodGet, pathApps, h.listApps)
	handle(http.MethodPost, pathApps, h.createApp)
	handle(http.MethodGet, pathApp, h.getApp)
	handle(http.MethodPut, pathApp, h.putApp)
	handle(http.MethodDelete, pathApp, h.deleteApp)
	handle(http.MethodPut, pathLink, h.link)
	handle(http.MethodDelete, pathLink, h.unlink)
	handle(http.MethodGet, pathSelect, h.getSelection)
	handle(http.MethodPut, pathSelect, h.putSelection)
	handle(http.MethodDelete, pathSelect, h.deleteSelection)
	handle(http.MethodGet, pathFeatures, h.getFeatures)
	handle(http.MethodPut, pathFeatures, h.putFeatures)
	handle(http.MethodDelete, pathFeatures, h.deleteFeatures)

	handle(http.MethodGet, pathModels, h.listModels)
	handle(http.MethodGet, pathModel, h.getModel)
	handle(http.MethodPut, pathCurrent, h.setCurrent)
	handle(http.MethodPost, pathVersions, h.registerVersion)
	handle(http.MethodDelete, pathVersion, h.deleteVersion)
	handle(http.MethodPut, pathReplicas, h.setReplicas)
	handle(http.MethodPut, pathScale, h.setAutoscale)
	handle(http.MethodPost, pathProfile, h.profileVersion)
	handle(http.MethodGet, pathProfile, h.getProfile)

	handle(http.MethodPost, pathPurge, h.purgeCache)

	handle(http.MethodPost, pathJobs, h.createJob)
	handle(http.MethodGet, pathJobs, h.listJobs)
	handle(http.MethodGet, pathJob, h.getJob)
	handle(http.MethodDelete, pathJob, h.cancelJob)

	r.NotFoundHandler = h.serve(func(w http.ResponseWriter, req *http.Request) error {
		return errorf(http.StatusNotFound, "no endpoint %s %s; see docs/openapi-admin.yaml", clip.String(req.Method), clip.String(req.URL.Path))
	})
	r.MethodNotAllowedHandler = h.serve(func(w http.ResponseWriter, req *http.Request) error {
		allowed := route.Allowed(h.router, req)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return errorf(http.StatusMethodNotAllowed, "method %s not allowed on %s; allowed: %s", clip.String(req.Method), clip.String(req.URL.Path), strings.Join(allowed, ", "))
	})
	return r
}

// ServeHTTP authorizes the request, then routes it. Only the health check
// is open: probes need no secret, and it tells nothing but "up".
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.URL.Path != pathHealthz {
		if err := h.authorize(r); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	h.router.ServeHTTP(w, r)
}

// authorize checks the bearer token in constant time.
func (h *handler) authorize(r *http.Request) error {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return errorf(http.StatusUnauthorized, "missing bearer token: send the header \"Authorization: Bearer TOKEN\"")
	}
	scheme, token, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return errorf(http.StatusUnauthorized, "authorization: want the Bearer scheme")
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if h.tokenHash == nil || subtle.ConstantTimeCompare(sum[:], h.tokenHash) != 1 {
		return errorf(http.StatusUnauthorized, "invalid bearer token")
	}
	return nil
}

// serve adapts an endpoint that returns an error to an http.Handler: the
// error is answered by writeError, and every attempted change is logged,
// for an audit trail of who changed what (the admin listener is private).
func (h *handler) serve(f func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		err := f(w, r)
		if err != nil {
			h.writeError(w, r, err)
		}
		if r.Method != http.MethodGet {
			fields := []zap.Field{zap.String("method", clip.String(r.Method)), zap.String("path", clip.String(r.URL.Path)),
				zap.String("remote", r.RemoteAddr), zap.Duration("took", time.Since(start))}
			if err != nil {
				fields = append(fields, zap.Int("status", statusOf(err)), zap.NamedError("failure", err))
			}
			h.log.Info("admin: change", fields...)
		}
	})
}

// pathName returns the path variable v (app, model or version), checked
// with state.ValidName so that a malformed name is a 400 naming it rather
// than a puzzling 404.
func pathName(r *http.Request, v string) (string, error) {
	name := mux.Vars(r)[v]
	if !state.ValidName(name) {
		return "", badRequest("%s name %q in the path: must match [a-z0-9][a-z0-9_.-]{0,62}", v, clip.String(name))
	}
	return name, nil
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
	return nil
}
