// Package config reads the proxy's YAML configuration file: listeners,
// Redis, runtimes, and the apps and models to serve. Load starts from
// Default, unmarshals the file on top of it, and validates the whole file,
// so an error names the field and nothing half-valid is ever applied.
package config

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sloproxy/sloproxy/answered"
	"github.com/sloproxy/sloproxy/cache"
	"github.com/sloproxy/sloproxy/containers/process"
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/slo"
	"github.com/sloproxy/sloproxy/state"
)

// Config is the whole file.
type Config struct {
	// Listen is the address of the query API, the Open Inference Protocol
	// and /metrics; loopback by default (DefaultListen), so that exposing
	// the query port to other machines is an explicit setting such as
	// ":1337".
	Listen string `yaml:"listen"`
	// Admin is the admin API's listener.
	Admin Admin `yaml:"admin"`
	// Redis holds the shared state (see redis.go). No address means the
	// embedded default: state in a file under DataDir.
	Redis Redis `yaml:"redis"`
	// DataDir is the embedded default's directory: without Redis, the
	// state, what the selection policies learned and a generated admin
	// token are kept there, so that they outlive restarts. A relative path
	// resolves against the configuration file's directory; empty means
	// DefaultDataDir. Only one process at a time may use it. Unused with
	// Redis.
	DataDir string `yaml:"data_dir"`
	// Limits bound what one request may ask.
	Limits Limits `yaml:"limits"`
	// Runtimes configures how this proxy runs model replicas.
	Runtimes Runtimes `yaml:"runtimes"`
	// Autoscaler configures this proxy's autoscaler.
	Autoscaler Autoscaler `yaml:"autoscaler"`
	// OIP configures the Open Inference Protocol endpoints.
	OIP OIP `yaml:"oip"`
	// GRPC configures the Open Inference Protocol's gRPC listener.
	GRPC GRPC `yaml:"grpc"`
	// Log configures the zap logger.
	Log Log `yaml:"log"`
	// Cache configures the prediction cache.
	Cache Cache `yaml:"cache"`
	// Feedback configures what proxies remember of answered queries for
	// their feedback.
	Feedback Feedback `yaml:"feedback"`
	// Apps are created in the state at start, with their links, unless
	// the state has them already (see Seed).
	Apps []App `yaml:"apps"`
	// Models are registered in the state at start, unless the state has
	// the version already; each entry is one version, made current when
	// the state did not have the model (see Seed).
	Models []Model `yaml:"models"`
}

// Admin is the admin API's listener.
type Admin struct {
	// Listen is its address; loopback by default so that it is not exposed
	// by accident.
	Listen string `yaml:"listen"`
	// Token is the bearer token every admin call must carry. Empty means
	// the value of the environment variable TokenEnv.
	Token string `yaml:"token"`
	// TokenEnv names the environment variable holding the token.
	TokenEnv string `yaml:"token_env"`
}

// Limits bound requests.
type Limits struct {
	// MaxBodyBytes bounds a request body; larger ones get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInputBatch bounds the inputs of one input_batch or OIP request.
	MaxInputBatch int `yaml:"max_input_batch"`
	// DefaultBatchSize is the batch size of model versions that set none.
	DefaultBatchSize int `yaml:"default_batch_size"`
	// MaxReplicas bounds the replica count of one model version, in this
	// file, through the admin API and in what the runtimes start: a count
	// above it is refused with a 400 that names the limit, so that a typo
	// cannot start a million processes.
	MaxReplicas int `yaml:"max_replicas"`
}

// DefaultListen is the query listener's address when the file sets none.
const DefaultListen = "127.0.0.1:1337"

// DefaultMaxReplicas is limits.max_replicas when the file sets none.
const DefaultMaxReplicas = 32

// Runtimes configures the runtimes this proxy manages.
type Runtimes struct {
	Process ProcessRuntime `yaml:"process"`
	Docker  DockerRuntime  `yaml:"docker"`
	Swarm   SwarmRuntime   `yaml:"swarm"`
}

// SwarmRuntime runs each model version as a Docker Swarm service across
// the swarm's nodes (see package containers/swarm).
type SwarmRuntime struct {
	// Enabled makes this proxy create, update and remove the services of
	// swarm models. Off by default: it needs a swarm manager's Engine.
	Enabled bool `yaml:"enabled"`
	// Host is a manager's Engine address; empty means $DOCKER_HOST, else
	// the Engine's default socket.
	Host string `yaml:"host"`
	// Owner labels the services and prefixes their names; empty means
	// "sloproxy".
	Owner string `yaml:"owner"`
	// RPCKey derives each swarm version's RPC secret. Every proxy that
	// serves swarm versions needs it, whether it manages the runtime or
	// not; empty means $SLOPROXY_RPC_KEY. Required when enabled.
	RPCKey string `yaml:"rpc_key"`
	// Network is an overlay network the tasks join; empty means none.
	Network string `yaml:"network"`
	// Constraints and Preferences place the tasks, as `docker service
	// create --constraint` and `--placement-pref spread=` take them.
	Constraints []string `yaml:"constraints"`
	Preferences []string `yaml:"preferences"`
	// GPUResource is the generic resource kind the nodes advertise their
	// GPUs as; empty means NVIDIA-GPU.
	GPUResource string `yaml:"gpu_resource"`
	// WritableRoot gives tasks a writable root file system.
	WritableRoot bool `yaml:"writable_root"`
	// StartTimeout bounds a task's warm-up; 0 means 2 minutes.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// Cost is the price of a task replica; a model's cost overrides it.
	Cost Cost `yaml:"cost"`
}

// Key is the RPC key: RPCKey, else $SLOPROXY_RPC_KEY; nil when neither
// is set.
func (s SwarmRuntime) Key() []byte {
	if k := cmp.Or(s.RPCKey, os.Getenv("SLOPROXY_RPC_KEY")); k != "" {
		return []byte(k)
	}
	return nil
}

// DockerRuntime runs model replicas as containers on a Docker Engine (see
// package containers/docker). Proxies that share a Redis and an Engine may
// all enable it with one owner: they adopt each other's containers.
type DockerRuntime struct {
	// Enabled makes this proxy start, watch and replace the containers of
	// docker models. Off by default: it needs an Engine.
	Enabled bool `yaml:"enabled"`
	// Host is the Engine's address; empty means $DOCKER_HOST, else the
	// Engine's default socket.
	Host string `yaml:"host"`
	// Owner labels the containers; empty means "sloproxy".
	Owner string `yaml:"owner"`
	// Network is the network containers join; empty means the Engine's
	// default bridge.
	Network string `yaml:"network"`
	// WritableRoot gives containers a writable root file system; false
	// keeps it read-only with a tmpfs on /tmp.
	WritableRoot bool `yaml:"writable_root"`
	// StartTimeout bounds a container's start up to its answered warm-up
	// request; 0 means 2 minutes.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// DrainTimeout is how long a withdrawn replica keeps running for the
	// queries sent to it; 0 means 5 s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Cost is the price of a container replica; a model's cost overrides
	// it. It applies on reload.
	Cost Cost `yaml:"cost"`
}

// ProcessRuntime runs model replicas as local processes.
type ProcessRuntime struct {
	// Enabled makes this proxy start and restart the replicas of process
	// models. With several proxies on one Redis, enable it on one.
	Enabled bool `yaml:"enabled"`
	// PortBase is the first port tried for replicas.
	PortBase int `yaml:"port_base"`
	// Dir is the working directory of the processes, against which
	// relative commands resolve; empty means the directory of the
	// configuration file.
	Dir string `yaml:"dir"`
	// PassEnv names variables of the proxy's environment that model
	// processes get besides the allow-list of package containers/process
	// (PATH, HOME, LANG, LC_*, TZ, PYTHONPATH and the like).
	PassEnv []string `yaml:"pass_env"`
	// Cost is the price of a process replica; a model's cost overrides
	// it. It applies on reload.
	Cost Cost `yaml:"cost"`
}

// OIP configures the Open Inference Protocol endpoints.
type OIP struct {
	// DefaultTimeout is the deadline of an infer request that sets no
	// timeout parameter, for a model that no app with an SLO links.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// Readiness is what GET /v2/health/ready requires before it answers
	// 200: every_app (Triton's strict readiness: each app has a ready
	// replica of a model that answers it) or any_app (at least one has).
	Readiness string `yaml:"readiness"`
}

// GRPC configures the Open Inference Protocol v2 over gRPC
// (inference.GRPCInferenceService, with grpc.health.v1 and reflection).
type GRPC struct {
	// Listen is its address, such as 127.0.0.1:8001 (Triton's gRPC port
	// is 8001). Empty, the default, means no gRPC listener.
	Listen string `yaml:"listen"`
}

// Cache configures the prediction cache: an in-process L1 and, when Redis
// is configured, an L2 in Redis shared by every proxy.
type Cache struct {
	// Enabled turns the cache on; apps opt out one by one with no_cache.
	Enabled bool `yaml:"enabled"`
	// L1Bytes bounds the in-process level.
	L1Bytes int64 `yaml:"l1_bytes"`
	// DefaultTTL is how long an answer stays cached for apps that set no
	// cache_ttl.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// RedisTimeout bounds each Redis call of the cache; past it the query
	// goes on without L2.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
}

// Feedback configures what proxies remember of answered queries, so that
// feedback can score them.
type Feedback struct {
	// Recent is how many answered queries this proxy keeps in memory.
	Recent int `yaml:"recent"`
	// Shared keeps each answered query in Redis too, when there is one,
	// so that its feedback may reach any proxy sharing it.
	Shared bool `yaml:"shared"`
	// SharedTTL is how long Redis keeps each.
	SharedTTL time.Duration `yaml:"shared_ttl"`
	// SharedRecent is how many answered queries Redis keeps, across the
	// proxies sharing it; beyond it the oldest are forgotten before their
	// shared_ttl.
	SharedRecent int `yaml:"shared_recent"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
}

// App is an app to create at start.
type App struct {
	Name      string        `yaml:"name"`
	InputType string        `yaml:"input_type"`
	SLO       time.Duration `yaml:"slo"`
	// DefaultOutput is answered, flagged, when no model answers in time.
	DefaultOutput string `yaml:"default_output"`
	// Policy is the model selection policy: single (the default: the
	// first model), weighted, exp3 or exp4; see docs/selection.md.
	Policy string `yaml:"policy"`
	// Selection tunes the policy. A reload applies it at once; what the
	// policy learned, in the shared state, stays.
	Selection Selection `yaml:"selection"`
	Priority  int       `yaml:"priority"`
	// CacheTTL is how long the app's answers stay cached; 0 means
	// cache.default_ttl.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// NoCache keeps the app's answers out of the cache.
	NoCache bool `yaml:"no_cache"`
	// Inputs lays the app's input out as named parts (see
	// state.App.Inputs); a feature lookup may fill one.
	Inputs []state.InputPart `yaml:"inputs"`
	// Models are linked to the app.
	Models []string `yaml:"models"`
	// Features, when set, looks features up in Redis before each query
	// is predicted (see package features). A reload applies it at once.
	Features *features.Spec `yaml:"features"`

	// The app's SLO policy, beyond the objective slo itself. A reload
	// applies changes to these at once; the controllers of models whose
	// batching did not change keep what they learned.

	// Objective is the fraction of queries that must be answered within
	// slo: 0.99 means p99 ≤ slo. The error budget is 1 - objective.
	// 0 means 0.99.
	Objective float64 `yaml:"objective"`
	// Window is the span of the attainment and burn-rate metrics. 0
	// means 5m.
	Window time.Duration `yaml:"window"`
	// Shed is what a query predicted to miss its deadline gets at once:
	// default (the default output, flagged, HTTP 200), reject (429) or
	// unavailable (503). Empty means default.
	Shed string `yaml:"shed"`
	// RetryAfter is the Retry-After of reject and unavailable answers. 0
	// means 1s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// RequestPriority lets a request lower its own priority class with
	// the Sloproxy-Priority header (never above priority).
	RequestPriority bool `yaml:"request_priority"`
	// Batching chooses the batch-size controller of the app's models.
	Batching Batching `yaml:"batching"`
}

// Selection tunes an app's selection policy; see selection.Spec, whose
// zero fields mean its defaults.
type Selection struct {
	// Output is label (the default: votes, exact-match rewards), number
	// (weighted means, negative squared error) or probabilities (weighted
	// means of class probabilities, the right class's probability).
	Output string `yaml:"output"`
	// Shares are weighted's traffic shares by model or model:version.
	Shares map[string]float64 `yaml:"shares"`
	// Eta is exp3's and exp4's learning rate.
	Eta float64 `yaml:"eta"`
	// Gamma is exp3's share of uniform exploration.
	Gamma float64 `yaml:"gamma"`
	// Gap bounds how far a model's log-weight falls behind the best's.
	Gap float64 `yaml:"gap"`
	// Shadow is a linked model that gets a copy of every query, never
	// returned.
	Shadow string `yaml:"shadow"`
	// Seed fixes the policy's random choices (tests, experiments).
	Seed uint64 `yaml:"seed"`
	// Guard rolls weighted's canary back when it misses the SLO or fails.
	Guard Guard `yaml:"guard"`
}

// Guard watches a canary; see selection.Guard.
type Guard struct {
	Canary        string        `yaml:"canary"`
	Window        time.Duration `yaml:"window"`
	MinQueries    int           `yaml:"min_queries"`
	MinAttainment float64       `yaml:"min_attainment"`
	MaxErrorRate  float64       `yaml:"max_error_rate"`
}

// SelectionSpec is a's selection policy.
func (a App) SelectionSpec() selection.Spec {
	s := a.Selection
	return selection.Spec{Policy: a.Policy, Output: selection.Output(s.Output), Shares: s.Shares, Eta: s.Eta, Gamma: s.Gamma,
		Gap: s.Gap, Shadow: s.Shadow, Seed: s.Seed, Guard: selection.Guard(s.Guard)}
}

// Selections are the apps' selection policies by app name.
func (c *Config) Selections() map[string]selection.Spec {
	out := make(map[string]selection.Spec, len(c.Apps))
	for _, a := range c.Apps {
		out[a.Name] = a.SelectionSpec()
	}
	return out
}

// validateSelection names the first problem of a's selection policy,
// including arms that name a model the app does not link.
func validateSelection(a App) error {
	s := a.SelectionSpec()
	if err := s.Validate(); err != nil {
		return err
	}
	return s.CheckArms(a.Models)
}

// Batching is an app's batch-size controller; see slo.Batching. Its zero
// value is slo.DefaultBatching.
type Batching struct {
	// Controller is off, static, aimd or latency_model (the default).
	Controller string `yaml:"controller"`
	// Size is static's batch size and the cap of the others; 0 means the
	// model's batch size.
	Size int `yaml:"size"`
	// Quantile is what latency_model plans against; 0 means 0.99.
	Quantile float64 `yaml:"quantile"`
	// Decrease is aimd's multiplicative decrease; 0 means 0.9.
	Decrease float64 `yaml:"decrease"`
	// Admission sheds queries predicted to miss their deadline; unset
	// means on.
	Admission *bool `yaml:"admission"`
	// Pace staggers the replicas' batch starts; unset means on.
	Pace *bool `yaml:"pace"`
}

// Batching is b with the defaults filled in.
func (b Batching) Batching() slo.Batching {
	d := slo.DefaultBatching
	if b.Controller != "" {
		d.Controller = b.Controller
	}
	if b.Quantile != 0 {
		d.Quantile = b.Quantile
	}
	if b.Decrease != 0 {
		d.Decrease = b.Decrease
	}
	if b.Admission != nil {
		d.Admission = *b.Admission
	}
	if b.Pace != nil {
		d.Pace = *b.Pace
	}
	d.Size = b.Size
	return d
}

// SLOPolicy is a's SLO policy with the defaults filled in.
func (a App) SLOPolicy() slo.Policy {
	p := slo.DefaultPolicy
	if a.Objective != 0 {
		p.Objective = a.Objective
	}
	if a.Window != 0 {
		p.Window = a.Window
	}
	if a.Shed != "" {
		p.Shed = slo.Shed(a.Shed)
	}
	if a.RetryAfter != 0 {
		p.RetryAfter = a.RetryAfter
	}
	p.RequestPriority = a.RequestPriority
	p.Batching = a.Batching.Batching()
	return p
}

// Policies are the apps' SLO policies by app name.
func (c *Config) Policies() map[string]slo.Policy {
	out := make(map[string]slo.Policy, len(c.Apps))
	for _, a := range c.Apps {
		out[a.Name] = a.SLOPolicy()
	}
	return out
}

// validatePolicy names the first problem of a's SLO policy, including
// contradictions with the models it links.
func (c *Config) validatePolicy(a App, models map[string]state.ModelVersion, batchingOf map[string]string) error {
	p := a.SLOPolicy()
	switch {
	case !(p.Objective > 0 && p.Objective < 1):
		return fmt.Errorf("objective %v: must be above 0 and below 1 (0.99 means p99 within slo)", p.Objective)
	case p.Window < time.Second:
		return fmt.Errorf("window %v: must be at least 1s", p.Window)
	case p.RetryAfter <= 0:
		return fmt.Errorf("retry_after %v: must be positive", p.RetryAfter)
	}
	switch p.Shed {
	case slo.ShedDefault, slo.ShedReject, slo.ShedUnavailable:
	default:
		return fmt.Errorf("shed %q: must be default, reject or unavailable", p.Shed)
	}
	if a.RetryAfter != 0 && p.Shed == slo.ShedDefault {
		return fmt.Errorf("retry_after %v: only reject and unavailable answers carry Retry-After, and shed is default", a.RetryAfter)
	}
	if err := p.Batching.Validate(); err != nil {
		return fmt.Errorf("batching.%w", err)
	}
	for j, name := range a.Models {
		limit := slo.MaxBatch(models[name], c.Limits.DefaultBatchSize)
		if p.Batching.Size > limit {
			return fmt.Errorf("batching.size %d: above the batch size %d of model %q (models[%d]); the model's batch size caps every batch",
				p.Batching.Size, limit, name, j)
		}
		if other, ok := batchingOf[name]; ok {
			if prev, _ := c.app(other); prev.SLOPolicy().Batching != p.Batching {
				return fmt.Errorf("batching: model %q is also linked to app %q, whose batching differs; a model's batches serve all its apps, so their batching must agree", name, other)
			}
		}
		batchingOf[name] = a.Name
	}
	return nil
}

// app returns the configured app named name.
func (c *Config) app(name string) (App, bool) {
	for _, a := range c.Apps {
		if a.Name == name {
			return a, true
		}
	}
	return App{}, false
}

// Model is a model version to register at start.
type Model struct {
	Name      string `yaml:"name"`
	Version   string `yaml:"version"`
	InputType string `yaml:"input_type"`
	// Runtime is process, external, docker or swarm.
	Runtime   string            `yaml:"runtime"`
	Command   []string          `yaml:"command"`
	Env       map[string]string `yaml:"env"`
	Addresses []string          `yaml:"addresses"`
	Image     string            `yaml:"image"`
	Replicas  int               `yaml:"replicas"`
	BatchSize int               `yaml:"batch_size"`

	// CPUs, MemoryBytes, GPUs and DeviceIDs limit and equip each docker
	// container or swarm task; see state.RuntimeSpec.
	CPUs        float64  `yaml:"cpus"`
	MemoryBytes int64    `yaml:"memory_bytes"`
	GPUs        int      `yaml:"gpus"`
	DeviceIDs   []string `yaml:"device_ids"`

	// Autoscale, when set, has the autoscaler set the version's replica
	// count from its demand; Replicas is then where it starts.
	Autoscale *Autoscale `yaml:"autoscale"`
	// Cost, when set, prices every version of the model in the place of
	// its runtime's cost (a GPU model on the docker runtime, say).
	Cost *Cost `yaml:"cost"`
}

// DefaultDataDir is the data directory when DataDir is empty: beside the
// configuration file, as relative process commands resolve, so that a
// proxy finds its state wherever it is started from.
const DefaultDataDir = "sloproxy-data"

// DefaultAdminListen is where the admin API listens unless admin.listen
// says otherwise: loopback only, on Clipper's management port. The admin
// client's default URL (admin.DefaultURL) points there.
const DefaultAdminListen = "127.0.0.1:1338"

// The values of OIP.Readiness, spelled as proxy.Readiness spells them.
const (
	ReadinessEveryApp = "every_app"
	ReadinessAnyApp   = "any_app"
)

// Default is the configuration an empty file yields.
var Default = Config{
	Listen: DefaultListen,
	Admin:  Admin{Listen: DefaultAdminListen, TokenEnv: "SLOPROXY_ADMIN_TOKEN"},
	Redis:  Redis{Prefix: state.DefaultRedisPrefix},
	Limits: Limits{MaxBodyBytes: 4 << 20, MaxInputBatch: 1024, DefaultBatchSize: 32, MaxReplicas: DefaultMaxReplicas},
	Runtimes: Runtimes{Process: ProcessRuntime{
		Enabled:  true,
		PortBase: process.DefaultBasePort,
	}},
	Autoscaler: Autoscaler{Enabled: true},
	OIP:        OIP{DefaultTimeout: time.Second, Readiness: ReadinessEveryApp},
	Log:        Log{Level: "info", Format: "json"},
	Cache:      Cache{Enabled: true, L1Bytes: cache.DefaultL1Bytes, DefaultTTL: cache.DefaultTTL, RedisTimeout: cache.DefaultTimeout},
	Feedback:   Feedback{Recent: answered.DefaultSize, Shared: true, SharedTTL: answered.DefaultSharedTTL, SharedRecent: answered.DefaultSharedSize},
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse unmarshals raw on top of Default and validates the result.
// Unknown fields are errors: a misspelt key must not be silently ignored.
func Parse(raw []byte) (*Config, error) {
	c := Default
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for i := range c.Models {
		if c.Models[i].Replicas == 0 {
			c.Models[i].Replicas = 1
		}
		if c.Models[i].Runtime == "" {
			c.Models[i].Runtime = string(state.RuntimeProcess)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the whole configuration; the first problem found is
// returned, naming its field.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return errors.New("listen: must be an address such as 127.0.0.1:1337")
	}
	if c.Admin.Listen == "" {
		return errors.New("admin.listen: must be an address such as 127.0.0.1:1338")
	}
	if err := c.Redis.validate(); err != nil {
		return err
	}
	if c.Limits.MaxBodyBytes <= 0 {
		return fmt.Errorf("limits.max_body_bytes %d: must be positive", c.Limits.MaxBodyBytes)
	}
	if c.Limits.MaxInputBatch <= 0 {
		return fmt.Errorf("limits.max_input_batch %d: must be positive", c.Limits.MaxInputBatch)
	}
	if c.Limits.DefaultBatchSize <= 0 {
		return fmt.Errorf("limits.default_batch_size %d: must be positive", c.Limits.DefaultBatchSize)
	}
	if c.Limits.MaxReplicas <= 0 {
		return fmt.Errorf("limits.max_replicas %d: must be positive", c.Limits.MaxReplicas)
	}
	if c.OIP.DefaultTimeout <= 0 {
		return fmt.Errorf("oip.default_timeout %v: must be positive", c.OIP.DefaultTimeout)
	}
	if r := c.OIP.Readiness; r != ReadinessEveryApp && r != ReadinessAnyApp {
		return fmt.Errorf("oip.readiness %q: must be %s or %s", r, ReadinessEveryApp, ReadinessAnyApp)
	}
	if p := c.Runtimes.Process.PortBase; p < 1 || p > 65535 {
		return fmt.Errorf("runtimes.process.port_base %d: must be a port, 1 to 65535", p)
	}
	if d := c.Runtimes.Docker; d.StartTimeout < 0 || d.DrainTimeout < 0 {
		return fmt.Errorf("runtimes.docker: start_timeout %v, drain_timeout %v: must not be negative", d.StartTimeout, d.DrainTimeout)
	}
	if sw := c.Runtimes.Swarm; sw.Enabled && sw.Key() == nil {
		return errors.New("runtimes.swarm.rpc_key: required when the swarm runtime is enabled (or set $SLOPROXY_RPC_KEY): the tasks' RPC ports answer off loopback")
	}
	if sw := c.Runtimes.Swarm; sw.StartTimeout < 0 {
		return fmt.Errorf("runtimes.swarm.start_timeout %v: must not be negative", sw.StartTimeout)
	}
	if c.Cache.L1Bytes <= 0 {
		return fmt.Errorf("cache.l1_bytes %d: must be positive", c.Cache.L1Bytes)
	}
	if c.Cache.DefaultTTL <= 0 {
		return fmt.Errorf("cache.default_ttl %v: must be positive", c.Cache.DefaultTTL)
	}
	if c.Cache.RedisTimeout <= 0 {
		return fmt.Errorf("cache.redis_timeout %v: must be positive", c.Cache.RedisTimeout)
	}
	if c.Feedback.Recent <= 0 {
		return fmt.Errorf("feedback.recent %d: must be positive", c.Feedback.Recent)
	}
	if c.Feedback.SharedTTL <= 0 {
		return fmt.Errorf("feedback.shared_ttl %v: must be positive", c.Feedback.SharedTTL)
	}
	if c.Feedback.SharedRecent <= 0 {
		return fmt.Errorf("feedback.shared_recent %d: must be positive", c.Feedback.SharedRecent)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		return fmt.Errorf("log.format %q: must be json or console", c.Log.Format)
	}
	if err := c.validateCosts(); err != nil {
		return err
	}
	models := map[string]state.ModelVersion{}
	for i, m := range c.Models {
		if m.Autoscale != nil {
			if err := m.Autoscale.check(c.Limits.MaxReplicas); err != nil {
				return fmt.Errorf("models[%d]: model %q version %q: %w", i, m.Name, m.Version, err)
			}
		}
		mv := m.ModelVersion()
		if err := mv.Validate(); err != nil {
			return fmt.Errorf("models[%d]: %w", i, err)
		}
		if m.Replicas > c.Limits.MaxReplicas {
			return fmt.Errorf("models[%d]: model %q version %q: replicas %d: above limits.max_replicas (%d)", i, m.Name, m.Version, m.Replicas, c.Limits.MaxReplicas)
		}
		if _, dup := models[m.Name]; dup {
			return fmt.Errorf("models[%d]: model %q appears twice (register further versions through the admin API)", i, m.Name)
		}
		models[m.Name] = mv
	}
	apps := map[string]bool{}
	batchingOf := map[string]string{} // model → the first app linking it
	for i, a := range c.Apps {
		if err := a.App().Validate(); err != nil {
			return fmt.Errorf("apps[%d]: %w", i, err)
		}
		if apps[a.Name] {
			return fmt.Errorf("apps[%d]: app %q appears twice", i, a.Name)
		}
		apps[a.Name] = true
		for j, name := range a.Models {
			mv, ok := models[name]
			if !ok {
				return fmt.Errorf("apps[%d].models[%d]: model %q is not defined under models", i, j, name)
			}
			if string(mv.InputType) != a.InputType {
				return fmt.Errorf("apps[%d].models[%d]: model %q takes %s but app %q takes %s", i, j, name, mv.InputType, a.Name, a.InputType)
			}
		}
		if err := c.validatePolicy(a, models, batchingOf); err != nil {
			return fmt.Errorf("apps[%d].%w", i, err)
		}
		if err := validateSelection(a); err != nil {
			return fmt.Errorf("apps[%d].selection: %w", i, err)
		}
		if f := a.Features; f != nil {
			if err := f.Validate(a.App()); err != nil {
				return fmt.Errorf("apps[%d].%w", i, err)
			}
			if f.Redis == "" && !c.Redis.Configured() {
				return fmt.Errorf("apps[%d].features.redis: empty, and no redis (addr or addrs) is configured to look features up in", i)
			}
		}
	}
	return nil
}

// Features returns the apps' feature lookups, by app.
func (c *Config) Features() map[string]features.Spec {
	out := map[string]features.Spec{}
	for _, a := range c.Apps {
		if a.Features != nil {
			out[a.Name] = *a.Features
		}
	}
	return out
}

// App is a's state form.
func (a App) App() state.App {
	return state.App{Name: a.Name, InputType: state.InputType(a.InputType), SLO: a.SLO,
		DefaultOutput: a.DefaultOutput, Policy: a.Policy, Priority: a.Priority, CacheTTL: a.CacheTTL, NoCache: a.NoCache, Inputs: a.Inputs}
}

// ModelVersion is m's state form.
func (m Model) ModelVersion() state.ModelVersion {
	var as *state.Autoscale
	if m.Autoscale != nil {
		as = m.Autoscale.State()
	}
	return state.ModelVersion{
		Autoscale: as,
		Model:     m.Name,
		Version:   m.Version,
		InputType: state.InputType(m.InputType),
		Runtime: state.RuntimeSpec{Kind: state.RuntimeKind(m.Runtime), Command: m.Command, Env: m.Env,
			Addresses: m.Addresses, Image: m.Image, CPUs: m.CPUs, MemoryBytes: m.MemoryBytes, GPUs: m.GPUs, DeviceIDs: m.DeviceIDs},
		Replicas:  m.Replicas,
		BatchSize: m.BatchSize,
	}
}

// Seed adds the configured models, versions, apps and links that the state
// lacks, and returns the names of those it already had, which it leaves as
// they are: the state, shared by every proxy, holds what operators changed
// since (a rollback, a scale, a new SLO through the admin API), and a
// proxy's restart must not undo it. A configured version becomes current
// only for a model the state did not have.
func (c *Config) Seed(ctx context.Context, s *state.Store) (kept []string, err error) {
	for _, m := range c.Models {
		// The state's own rule makes a new model's first version current.
		added, err := s.AddVersion(ctx, m.ModelVersion())
		switch {
		case errors.Is(err, state.ErrConflict):
			kept = append(kept, fmt.Sprintf("model %s version %s (the state's has another spec)", m.Name, m.Version))
		case err != nil:
			return kept, err
		case !added:
			kept = append(kept, fmt.Sprintf("model %s version %s", m.Name, m.Version))
		}
	}
	for _, a := range c.Apps {
		if _, ok := s.Snapshot().App(a.Name); ok {
			kept = append(kept, fmt.Sprintf("app %s", a.Name))
			continue
		}
		if err := s.PutApp(ctx, a.App()); err != nil {
			return kept, err
		}
		for _, m := range a.Models {
			if err := s.Link(ctx, a.Name, m); err != nil {
				return kept, err
			}
		}
	}
	return kept, nil
}

// AdminToken is the admin bearer token: Admin.Token, else the variable
// Admin.TokenEnv names.
func (c *Config) AdminToken() string {
	if c.Admin.Token != "" {
		return c.Admin.Token
	}
	return os.Getenv(c.Admin.TokenEnv)
}
