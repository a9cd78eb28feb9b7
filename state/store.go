package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Backend stores the state document and tells of changes to it. Memory and
// Redis implement it.
type Backend interface {
	// Load returns the current document; an empty one at revision 0 if
	// none was ever written. The caller must not modify it.
	Load(ctx context.Context) (*Data, error)
	// Update atomically applies fn to a private copy of the current
	// document, which fn may modify and keep, and commits it with the
	// revision increased by one. If the document changed concurrently, fn
	// runs again on the new one, so it must be repeatable. If fn returns
	// an error, nothing is written and Update returns that error
	// unchanged. It returns the committed document, which the caller must
	// not modify.
	Update(ctx context.Context, fn func(*Data) error) (*Data, error)
	// Watch calls notify after each change committed through any
	// instance sharing the backend, with the new revision, until ctx is
	// done. It also calls notify with 0, meaning "reload", whenever it
	// (re)establishes its watch, since changes made before that were not
	// announced to it. Calls are serial and notify must not block.
	// Notifications may be lost or repeated, so a Store also polls. It
	// returns nil when ctx is done; an error if it cannot go on, after
	// which the Store calls it again after a pause.
	Watch(ctx context.Context, notify func(revision uint64)) error
}

// DefaultPollInterval is how often a Store reloads the state when no change
// notification arrives.
const DefaultPollInterval = 5 * time.Second

// Options configure a Store. The zero value is usable.
type Options struct {
	// PollInterval is how often the Store reloads the state in case a
	// change notification was lost. Zero means DefaultPollInterval;
	// negative disables polling.
	PollInterval time.Duration
	// Logger receives reload failures and recoveries. Nil means none.
	Logger *zap.Logger
	// CheckApp checks every app PutApp or UpdateApp would store, in the
	// same step as the write, for what the state cannot judge itself
	// (whether a features spec fits the app's input type); its error,
	// which should wrap ErrConflict or ErrInvalid, refuses the change.
	// Nil means no check beyond the state's own.
	CheckApp func(a App) error
}

// Store holds the state for the whole process. Reads go through Snapshot,
// an atomic pointer load; mutations validate, commit through the Backend,
// and install the committed document at once, so a proxy reads its own
// writes. Changes committed by other proxies arrive through the Backend's
// Watch and a periodic reload, once Start has been called.
//
// A Store is safe for concurrent use.
type Store struct {
	backend  Backend
	poll     time.Duration
	log      *zap.Logger
	checkApp func(App) error // Options.CheckApp, never nil

	snap atomic.Pointer[Snapshot]
	// wake is the loop's "reload now" signal: 1-buffered, sent without
	// blocking, so a burst of notifications causes one reload.
	wake chan struct{}

	// mu guards cancel and done: the lifecycle.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutines have returned; nil before Start
}

// NewStore returns a Store over b (a new Memory if b is nil) holding the
// empty state; Start loads the stored state. A Store that is never started
// still applies its own mutations: enough for one process over Memory.
func NewStore(b Backend, opts Options) *Store {
	if b == nil {
		b = NewMemory()
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CheckApp == nil {
		opts.CheckApp = func(App) error { return nil }
	}
	s := &Store{backend: b, poll: opts.PollInterval, log: opts.Logger, checkApp: opts.CheckApp, wake: make(chan struct{}, 1)}
	s.snap.Store(newSnapshot(&Data{}))
	return s
}

// Snapshot returns the latest state. It is cheap: call it once per query.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Start loads the stored state, failing if it cannot, then follows changes
// in the background until ctx is done or Close is called.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errors.New("state: store already started")
	}
	if err := s.reload(ctx); err != nil {
		return fmt.Errorf("state: load: %w", err)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx) })
	wg.Go(func() { s.loop(ctx) })
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return nil
}

// Close stops following changes and waits for the background goroutines to
// return. It does not close the Backend. The Snapshot stays readable and
// mutations still work.
func (s *Store) Close() error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	return nil
}

// watch runs the Backend's Watch, again after a pause if it fails.
func (s *Store) watch(ctx context.Context) {
	for {
		err := s.protect("watch", func() error {
			return s.backend.Watch(ctx, s.notify)
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("state: watching for changes failed; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// notify is the Backend's change callback.
func (s *Store) notify(revision uint64) {
	if revision != 0 && revision <= s.Snapshot().Revision() {
		return // our own change, or one already loaded
	}
	select {
	case s.wake <- struct{}{}:
	default: // a reload is pending already
	}
}

// loop reloads the state when woken and every poll interval.
func (s *Store) loop(ctx context.Context) {
	var tick <-chan time.Time
	if s.poll > 0 {
		t := time.NewTicker(s.poll)
		defer t.Stop()
		tick = t.C
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tick:
		}
		err := s.protect("reload", func() error { return s.reload(ctx) })
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			s.log.Warn("state: reload failed; serving the last state loaded", zap.Error(err), zap.Uint64("revision", s.Snapshot().Revision()))
		case err == nil && failing:
			s.log.Info("state: reload works again", zap.Uint64("revision", s.Snapshot().Revision()))
		}
		failing = err != nil
	}
}

// protect runs f, turning a panic into an error so that a bug in one
// reload does not stop the loop.
func (s *Store) protect(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("state: panic", zap.String("in", what), zap.Any("panic", r), zap.Stack("stack"))
			err = fmt.Errorf("state: panic in %s: %v", what, r)
		}
	}()
	return f()
}

// reload loads the stored state and installs it if it is newer. If it is
// older, the backend lost data (a Redis restarted without persistence):
// reload writes the state this Store holds back.
func (s *Store) reload(ctx context.Context) error {
	d, err := s.backend.Load(ctx)
	if err != nil {
		return err
	}
	if err := checkSchema(d); err != nil {
		return err
	}
	if d.Revision >= s.Snapshot().Revision() {
		s.install(d)
		return nil
	}
	s.log.Warn("state: stored state is older than ours (lost by the backend?); writing ours back",
		zap.Uint64("stored_revision", d.Revision), zap.Uint64("revision", s.Snapshot().Revision()))
	return s.update(ctx, func(*Data) error { return errNoChange })
}

// install makes d the current snapshot if it is newer than the current one,
// and wakes whoever waits for a change.
func (s *Store) install(d *Data) {
	var next *Snapshot
	for {
		cur := s.snap.Load()
		if d.Revision <= cur.Revision() {
			return
		}
		if next == nil {
			next = newSnapshot(d)
		}
		if s.snap.CompareAndSwap(cur, next) {
			close(cur.changed)
			return
		}
	}
}

// update commits mutate through the backend and installs the result.
// mutate returns errNoChange when the state already is as asked: nothing is
// written, yet the document it saw is installed, so the caller sees state
// at least as new as the one that made the change unnecessary. If the
// stored document is older than our snapshot, the backend lost data and
// update writes our snapshot back before applying mutate.
func (s *Store) update(ctx context.Context, mutate func(*Data) error) error {
	var seen *Data
	restored := false
	committed, err := s.backend.Update(ctx, func(d *Data) error {
		seen, restored = d, false
		if err := checkSchema(d); err != nil {
			return err
		}
		if ours := s.Snapshot(); d.Revision < ours.Revision() {
			c, err := ours.data.clone()
			if err != nil {
				return err
			}
			*d = *c
			restored = true
		}
		err := mutate(d)
		if errors.Is(err, errNoChange) && restored {
			return nil // commit the restored state
		}
		return err
	})
	switch {
	case err == nil:
		s.install(committed)
		return nil
	case errors.Is(err, errNoChange):
		s.install(seen)
		return nil
	default:
		return err
	}
}

func checkSchema(d *Data) error {
	if d.Schema > schemaVersion {
		return fmt.Errorf("state: stored document has schema %d; this sloproxy reads up to %d: upgrade it", d.Schema, schemaVersion)
	}
	return nil
}

// PutApp creates app a or replaces the app of that name. Changing the input
// type of an app linked to models is a conflict. A put keeps the stored
// selection and features specs and ignores a's: only UpdateApp sets them.
func (s *Store) PutApp(ctx context.Context, a App) error {
	if err := a.Validate(); err != nil {
		return err
	}
	a.Inputs = slices.Clone(a.Inputs) // the state's own, as the caller's may change
	return s.update(ctx, func(d *Data) error { return d.putApp(a, s.checkApp) })
}

// UpdateApp changes the app named name in one step with the state: change
// gets the app and the models linked to it, and may refuse with an error,
// which UpdateApp returns. Unlike PutApp it can set or clear the app's
// Selection and Features, which a put keeps.
func (s *Store) UpdateApp(ctx context.Context, name string, change func(a *App, models []string) error) error {
	return s.update(ctx, func(d *Data) error { return d.setApp(name, change, s.checkApp) })
}

// DeleteApp deletes the app named name and its links.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	return s.update(ctx, func(d *Data) error { return d.deleteApp(name) })
}

// PutVersion deploys version v.Version of model v.Model, creating the model
// if needed, or replaces that version's spec (e.g. to scale it). The first
// version of a model becomes its current version; later ones do not until
// SetCurrent. All versions of a model take one input type, the one of the
// apps it is linked to.
func (s *Store) PutVersion(ctx context.Context, v ModelVersion) error {
	if err := v.Validate(); err != nil {
		return err
	}
	v = v.clone()
	return s.update(ctx, func(d *Data) error { return d.putVersion(v) })
}

// AddVersion registers version v.Version of model v.Model as PutVersion
// does, unless the model has that version already: with the same spec
// nothing changes and added is false; with another spec it is a conflict,
// since a version, once registered, is immutable. The check is made on the
// document the change commits to, so two proxies registering at once, or
// one with a stale snapshot, cannot overwrite each other's spec.
func (s *Store) AddVersion(ctx context.Context, v ModelVersion) (added bool, err error) {
	if err := v.Validate(); err != nil {
		return false, err
	}
	v = v.clone()
	err = s.update(ctx, func(d *Data) error {
		added = false // the backend may run this more than once
		if old, ok := d.Models[v.Model].Version(v.Version); ok {
			if reflect.DeepEqual(old, v) {
				return errNoChange
			}
			return conflict("model %q version %q: already registered with another spec; versions are immutable", v.Model, v.Version)
		}
		added = true
		return d.putVersion(v)
	})
	return added && err == nil, err
}

// DeleteVersion deletes a version of a model, and the model with its last
// version. Deleting the current version of a model linked to an app is a
// conflict: set another current version, or unlink, first.
func (s *Store) DeleteVersion(ctx context.Context, model, version string) error {
	return s.update(ctx, func(d *Data) error { return d.deleteVersion(model, version) })
}

// SetCurrent makes version the current version of model: a deployment, or a
// rollback when version is older.
func (s *Store) SetCurrent(ctx context.Context, model, version string) error {
	return s.update(ctx, func(d *Data) error { return d.setCurrent(model, version) })
}

// Link lets app use model. Both must exist, take the same input type, and
// the model must have a current version. Linking twice is not an error.
func (s *Store) Link(ctx context.Context, app, model string) error {
	return s.update(ctx, func(d *Data) error { return d.link(app, model) })
}

// Unlink stops app from using model. The app must exist; unlinking a model
// that is not linked is not an error.
func (s *Store) Unlink(ctx context.Context, app, model string) error {
	return s.update(ctx, func(d *Data) error { return d.unlink(app, model) })
}

// SetReplicas replaces the addresses (host:port) of the live replicas of
// version of model; empty clears them. Runtimes call it as replicas come
// and go; setting the addresses already set writes nothing.
func (s *Store) SetReplicas(ctx context.Context, model, version string, addrs []string) error {
	addrs, err := normalizeAddrs(model, version, addrs)
	if err != nil {
		return err
	}
	return s.update(ctx, func(d *Data) error { return d.setReplicas(model, version, addrs) })
}

// clone returns v with its own copies of its slices and maps, empty ones
// made nil as JSON decoding would, so the caller may reuse them.
func (v ModelVersion) clone() ModelVersion {
	v.Runtime.Command = cloneSlice(v.Runtime.Command)
	v.Runtime.Addresses = cloneSlice(v.Runtime.Addresses)
	v.Runtime.DeviceIDs = cloneSlice(v.Runtime.DeviceIDs)
	v.Runtime.Env = cloneMap(v.Runtime.Env)
	v.Labels = cloneMap(v.Labels)
	if v.Autoscale != nil {
		v.Autoscale = new(*v.Autoscale)
	}
	if len(v.ExampleInput) == 0 {
		v.ExampleInput = nil
	} else {
		v.ExampleInput = slices.Clone(v.ExampleInput)
	}
	return v
}

func cloneSlice(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
