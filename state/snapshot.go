package state

import (
	"maps"
	"slices"
)

// Snapshot is the state at one revision. It never changes, so the query
// path reads it without locks: take one with Store.Snapshot at the start of
// a query and use it throughout, and every lookup agrees with every other.
//
// The slices and maps that its methods return (Model.Versions,
// ModelVersion.Runtime.Command, ModelsOf, Replicas, ...) are shared by
// every reader of the snapshot and must not be modified.
//
// The zero Snapshot is the empty state at revision 0.
type Snapshot struct {
	data *Data
	// current maps a model to its current version, for the query path.
	current map[string]*ModelVersion
	// appsOf maps a model to the sorted apps linked to it.
	appsOf map[string][]string
	// changed is closed when a newer snapshot replaces this one.
	changed chan struct{}
}

// newSnapshot indexes d, which must not be modified afterwards.
func newSnapshot(d *Data) *Snapshot {
	s := &Snapshot{
		data:    d,
		current: make(map[string]*ModelVersion, len(d.Models)),
		appsOf:  make(map[string][]string),
		changed: make(chan struct{}),
	}
	for name, m := range d.Models {
		for i := range m.Versions {
			if m.Versions[i].Version == m.CurrentVersion {
				s.current[name] = &m.Versions[i]
			}
		}
	}
	for _, app := range slices.Sorted(maps.Keys(d.Links)) {
		for _, model := range d.Links[app] {
			s.appsOf[model] = append(s.appsOf[model], app)
		}
	}
	return s
}

// Revision returns the number of changes committed before this snapshot.
// A later snapshot of the same Store has a larger revision.
func (s *Snapshot) Revision() uint64 {
	if s.data == nil {
		return 0
	}
	return s.data.Revision
}

// Changed returns a channel that is closed when a newer snapshot replaces
// this one in its Store: the way to wait for a change, for any number of
// waiters, without missing one that happens between reading the snapshot
// and waiting:
//
//	for {
//		snap := store.Snapshot()
//		reconcile(snap)
//		select {
//		case <-snap.Changed():
//		case <-ctx.Done():
//			return
//		}
//	}
//
// The zero Snapshot's channel is nil: it never fires.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// App returns the app named name.
func (s *Snapshot) App(name string) (App, bool) {
	if s.data == nil {
		return App{}, false
	}
	a, ok := s.data.Apps[name]
	return a, ok
}

// Apps returns every app, sorted by name.
func (s *Snapshot) Apps() []App {
	if s.data == nil {
		return nil
	}
	apps := make([]App, 0, len(s.data.Apps))
	for _, name := range slices.Sorted(maps.Keys(s.data.Apps)) {
		apps = append(apps, s.data.Apps[name])
	}
	return apps
}

// Model returns the model named name with all its versions.
func (s *Snapshot) Model(name string) (Model, bool) {
	if s.data == nil {
		return Model{}, false
	}
	m, ok := s.data.Models[name]
	return m, ok
}

// Models returns every model, sorted by name.
func (s *Snapshot) Models() []Model {
	if s.data == nil {
		return nil
	}
	models := make([]Model, 0, len(s.data.Models))
	for _, name := range slices.Sorted(maps.Keys(s.data.Models)) {
		models = append(models, s.data.Models[name])
	}
	return models
}

// ModelsOf returns the sorted names of the models linked to app; nil if
// there are none or app does not exist.
func (s *Snapshot) ModelsOf(app string) []string {
	if s.data == nil {
		return nil
	}
	return s.data.Links[app]
}

// AppsOf returns the sorted names of the apps linked to model.
func (s *Snapshot) AppsOf(model string) []string { return s.appsOf[model] }

// Current returns the current version of model. It is false when the model
// does not exist or has no current version; a model linked to an app always
// has one.
func (s *Snapshot) Current(model string) (ModelVersion, bool) {
	v, ok := s.current[model]
	if !ok {
		return ModelVersion{}, false
	}
	return *v, true
}

// Version returns version v of model.
func (s *Snapshot) Version(model, v string) (ModelVersion, bool) {
	m, ok := s.Model(model)
	if !ok {
		return ModelVersion{}, false
	}
	return m.Version(v)
}

// Replicas returns the sorted addresses (host:port) of the live replicas of
// version v of model, as the runtimes registered them.
func (s *Snapshot) Replicas(model, v string) []string {
	if s.data == nil {
		return nil
	}
	return s.data.Replicas[model][v]
}
