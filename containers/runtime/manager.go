package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/state"
)

// DefaultInterval is how often the Manager reconciles when the state does
// not change.
const DefaultInterval = 10 * time.Second

// Store is the part of *state.Store the Manager uses.
type Store interface {
	Snapshot() *state.Snapshot
	SetReplicas(ctx context.Context, model, version string, addrs []string) error
}

var _ Store = (*state.Store)(nil)

// Options configure a Manager. The zero value of each field has the meaning
// its comment gives.
type Options struct {
	// Runtimes maps each runtime kind this proxy manages to its Runtime.
	// Versions of other kinds are left alone: their replicas are someone
	// else's to register (see the package comment). Nil or empty means the
	// Manager manages nothing.
	Runtimes map[state.RuntimeKind]Runtime
	// Interval is the time between passes when the state does not change:
	// a safety net that retries what failed and catches what changed
	// outside the state (a container removed by hand). 0 means
	// DefaultInterval.
	Interval time.Duration
	// Logger receives what each pass changed and what failed. Nil means no
	// logs.
	Logger *zap.Logger
	// MaxReplicas bounds the replicas the Manager asks a runtime to run for
	// one version. A version whose count is above it (written to the
	// shared state by a proxy with a higher limit) is not ensured: its
	// Problem names the limit, and the replicas it has keep running. 0
	// means no bound.
	MaxReplicas int
}

// Manager makes the runtimes run what the state says. It reconciles on every
// change of the state's snapshot, every Options.Interval and whenever a
// runtime that is a Notifier signals a change: for each
// version in the state whose runtime kind it manages, it calls Ensure and
// registers the addresses with SetReplicas when they differ from the
// snapshot's; a version a runtime runs that is no longer in the state (or
// now has another kind) is removed. Failures are logged with the model and
// version and retried on the next pass; none stops the Manager.
//
// Closing the Manager stops reconciling but leaves the replicas running and
// registered; close the runtimes to stop them.
type Manager struct {
	store    Store
	runtimes map[state.RuntimeKind]Runtime
	interval time.Duration
	log      *zap.Logger
	maxReps  int

	// pass serializes passes: the loop's and Reconcile's. Runtimes are
	// called from one goroutine at a time.
	pass sync.Mutex

	// problemsMu guards problems: the last ensure error of each version
	// whose last ensure failed.
	problemsMu sync.Mutex
	problems   map[VersionKey]string

	// mu guards cancel and done: the lifecycle.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned; nil before Start
}

// NewManager returns a Manager of store's model versions; Start starts it.
func NewManager(store Store, opts Options) *Manager {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Manager{
		store:    store,
		runtimes: maps.Clone(opts.Runtimes),
		interval: opts.Interval,
		log:      opts.Logger,
		maxReps:  opts.MaxReplicas,
		problems: map[VersionKey]string{},
	}
}

// Problem returns why the last attempt to run a model version failed (the
// runtime's Ensure error, such as a missing image or a container that
// exits at start), or "" if it succeeded or the version is not managed
// here. The admin API shows it, so that who deploys sees it.
func (m *Manager) Problem(model, version string) string {
	m.problemsMu.Lock()
	defer m.problemsMu.Unlock()
	return m.problems[VersionKey{model, version}]
}

func (m *Manager) setProblem(k VersionKey, err error) {
	m.problemsMu.Lock()
	defer m.problemsMu.Unlock()
	if err == nil {
		delete(m.problems, k)
		return
	}
	m.problems[k] = err.Error()
}

// Start reconciles in the background, at once and then on every change,
// until ctx is done or Close is called.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done != nil {
		return errors.New("runtime: manager already started")
	}
	ctx, m.cancel = context.WithCancel(ctx)
	m.done = make(chan struct{})
	go m.loop(ctx)
	return nil
}

// Close stops reconciling and waits for a pass in progress to end.
func (m *Manager) Close() error {
	m.mu.Lock()
	cancel, done := m.cancel, m.done
	m.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	return nil
}

// Reconcile runs one pass now, after the one in progress if any, and
// returns what failed in it (which it also logs).
func (m *Manager) Reconcile(ctx context.Context) error {
	return m.reconcile(ctx, m.store.Snapshot())
}

func (m *Manager) loop(ctx context.Context) {
	defer close(m.done)
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	// The runtimes' own changes merge into wake: a burst of them costs
	// one pass.
	wake := make(chan struct{}, 1)
	var forwarders sync.WaitGroup
	defer forwarders.Wait()
	for _, rt := range m.runtimes {
		if n, ok := rt.(Notifier); ok {
			forwarders.Go(func() { forward(ctx, n.Changed(), wake) })
		}
	}
	for {
		snap := m.store.Snapshot()
		_ = m.reconcile(ctx, snap)
		// Our own SetReplicas changes the snapshot too, so a pass that
		// registered addresses is followed by one that finds nothing to do.
		select {
		case <-ctx.Done():
			return
		case <-snap.Changed():
		case <-tick.C:
		case <-wake:
		}
	}
}

// forward sends to wake, without blocking, each time from receives, until
// ctx is done.
func forward(ctx context.Context, from <-chan struct{}, wake chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-from:
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
}

// reconcile makes the runtimes run the versions of snap.
func (m *Manager) reconcile(ctx context.Context, snap *state.Snapshot) (err error) {
	m.pass.Lock()
	defer m.pass.Unlock()
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("runtime: panic in a reconcile pass", zap.Any("panic", p), zap.Stack("stack"))
			err = fmt.Errorf("runtime: panic: %v", p)
		}
	}()
	desired := make(map[VersionKey]state.ModelVersion)
	for _, model := range snap.Models() {
		for _, mv := range model.Versions {
			if _, ok := m.runtimes[mv.Runtime.Kind]; ok {
				desired[VersionKey{mv.Model, mv.Version}] = mv
			}
		}
	}
	// Remove first, freeing ports and resources for what starts below.
	errs := m.removeUndesired(ctx, desired)
	m.problemsMu.Lock()
	maps.DeleteFunc(m.problems, func(k VersionKey, _ string) bool { _, ok := desired[k]; return !ok })
	m.problemsMu.Unlock()
	for _, k := range slices.SortedFunc(maps.Keys(desired), VersionKey.Compare) {
		if err := m.ensure(ctx, desired[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeUndesired removes from each runtime the versions it runs that are
// not desired of it.
func (m *Manager) removeUndesired(ctx context.Context, desired map[VersionKey]state.ModelVersion) []error {
	var errs []error
	for _, kind := range slices.Sorted(maps.Keys(m.runtimes)) {
		rt := m.runtimes[kind]
		running, err := rt.Running(ctx)
		if err != nil {
			m.log.Warn("runtime: listing running versions failed; retrying on the next pass", zap.String("kind", string(kind)), zap.Error(err))
			errs = append(errs, fmt.Errorf("%s runtime: running: %w", kind, err))
			continue
		}
		for _, k := range running {
			if mv, ok := desired[k]; ok && mv.Runtime.Kind == kind {
				continue
			}
			log := m.log.With(zap.String("kind", string(kind)), zap.String("model", k.Model), zap.String("version", k.Version))
			if err := rt.Remove(ctx, k.Model, k.Version); err != nil {
				log.Warn("runtime: removing replicas failed; retrying on the next pass", zap.Error(err))
				errs = append(errs, fmt.Errorf("%s runtime: model %q version %q: remove: %w", kind, k.Model, k.Version, err))
				continue
			}
			log.Info("runtime: removed the replicas of a version no longer in the state")
		}
	}
	return errs
}

// ensure makes mv's runtime run it and registers its replicas' addresses.
func (m *Manager) ensure(ctx context.Context, mv state.ModelVersion) error {
	log := m.log.With(zap.String("kind", string(mv.Runtime.Kind)), zap.String("model", mv.Model), zap.String("version", mv.Version))
	if m.maxReps > 0 && mv.Replicas > m.maxReps {
		err := fmt.Errorf("replicas %d: above limits.max_replicas (%d); not scaled", mv.Replicas, m.maxReps)
		m.setProblem(VersionKey{mv.Model, mv.Version}, err)
		log.Warn("runtime: refusing a replica count above the limit", zap.Error(err))
		return fmt.Errorf("%s runtime: model %q version %q: %w", mv.Runtime.Kind, mv.Model, mv.Version, err)
	}
	addrs, err := m.runtimes[mv.Runtime.Kind].Ensure(ctx, mv)
	m.setProblem(VersionKey{mv.Model, mv.Version}, err)
	if err != nil {
		log.Warn("runtime: ensuring replicas failed; retrying on the next pass", zap.Error(err))
		return fmt.Errorf("%s runtime: model %q version %q: ensure: %w", mv.Runtime.Kind, mv.Model, mv.Version, err)
	}
	addrs = slices.Compact(slices.Sorted(slices.Values(addrs)))
	// Compare with the latest snapshot: another writer may have changed the
	// replicas since the pass began.
	if slices.Equal(addrs, m.store.Snapshot().Replicas(mv.Model, mv.Version)) {
		return nil
	}
	if err := m.store.SetReplicas(ctx, mv.Model, mv.Version, addrs); err != nil {
		// ErrNotFound: the version was deleted meanwhile; the next pass,
		// which that change triggers, removes its replicas.
		log.Warn("runtime: registering replicas failed; retrying on the next pass", zap.Strings("addrs", addrs), zap.Error(err))
		return fmt.Errorf("model %q version %q: set replicas: %w", mv.Model, mv.Version, err)
	}
	log.Info("runtime: registered replicas", zap.Strings("addrs", addrs))
	return nil
}
