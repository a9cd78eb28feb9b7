package state

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// schemaVersion is the layout of Data. A Store refuses a document with a
// newer layout rather than overwrite what it cannot read.
const schemaVersion = 1

// Data is the whole state as one document: what a Backend stores and loads.
// Inside a Store it is immutable; mutations work on a private copy handed
// out by Backend.Update. Empty maps may be nil.
type Data struct {
	// Schema is the document's layout version (1).
	Schema int `json:"schema"`
	// Revision counts committed changes; every Update adds one.
	Revision uint64 `json:"revision"`
	// Apps by name.
	Apps map[string]App `json:"apps,omitempty"`
	// Models by name.
	Models map[string]Model `json:"models,omitempty"`
	// Links maps an app to the sorted names of the models it uses.
	Links map[string][]string `json:"links,omitempty"`
	// Replicas maps a model and a version to the sorted addresses
	// (host:port) of its live replicas.
	Replicas map[string]map[string][]string `json:"replicas,omitempty"`
	// Profiles maps a model and a version to the version's latest profile.
	Profiles map[string]map[string]Profile `json:"profiles,omitempty"`
}

// clone returns a deep copy of d. It goes through JSON, which keeps it
// correct as fields are added; it runs on mutations only, which are rare.
func (d *Data) clone() (*Data, error) {
	c := new(Data)
	if d == nil {
		return c, nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("copy state: %w", err)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("copy state: %w", err)
	}
	return c, nil
}

// appsOf returns the sorted names of the apps linked to model.
func (d *Data) appsOf(model string) []string {
	var apps []string
	for app, models := range d.Links {
		if slices.Contains(models, model) {
			apps = append(apps, app)
		}
	}
	slices.Sort(apps)
	return apps
}

// The mutations below check the change against d, then apply it. They
// return an error wrapping ErrNotFound, ErrConflict or ErrInvalid, or
// errNoChange, before modifying d, so d is untouched unless they return nil.

func (d *Data) putApp(a App, check func(App) error) error {
	// The selection and features specs are set through the admin API,
	// which alone changes them (see setApp): a put of the app's other
	// fields keeps them.
	old, ok := d.Apps[a.Name]
	a.Selection, a.Features = old.Selection, old.Features // nil for a new app
	if err := check(a); err != nil {
		return err
	}
	if ok {
		if reflect.DeepEqual(old, a) {
			return errNoChange
		}
		for _, name := range d.Links[a.Name] {
			if it := d.Models[name].InputType(); it != a.InputType {
				return conflict("app %q: input_type %q: linked model %q takes %q; unlink it first", a.Name, a.InputType, name, it)
			}
		}
	}
	if d.Apps == nil {
		d.Apps = make(map[string]App)
	}
	d.Apps[a.Name] = a
	return nil
}

// setApp replaces app name by what change makes of it, given the models
// linked to it; the app must exist.
func (d *Data) setApp(name string, change func(a *App, models []string) error, check func(App) error) error {
	a, ok := d.Apps[name]
	if !ok {
		return notFound("app %q", name)
	}
	if err := change(&a, slices.Clone(d.Links[name])); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if err := check(a); err != nil {
		return err
	}
	if reflect.DeepEqual(d.Apps[name], a) {
		return errNoChange
	}
	d.Apps[name] = a
	return nil
}

func (d *Data) deleteApp(name string) error {
	if _, ok := d.Apps[name]; !ok {
		return notFound("app %q", name)
	}
	delete(d.Apps, name)
	delete(d.Links, name)
	return nil
}

func (d *Data) putVersion(v ModelVersion) error {
	m, ok := d.Models[v.Model]
	if !ok {
		m = Model{Name: v.Model}
	}
	i := slices.IndexFunc(m.Versions, func(o ModelVersion) bool { return o.Version == v.Version })
	if i >= 0 && reflect.DeepEqual(m.Versions[i], v) {
		return errNoChange
	}
	for _, o := range m.Versions {
		if o.Version != v.Version && o.InputType != v.InputType {
			return conflict("model %q version %q: input_type %q: version %q takes %q; all versions of a model take one input type",
				v.Model, v.Version, v.InputType, o.Version, o.InputType)
		}
	}
	for _, app := range d.appsOf(v.Model) {
		if it := d.Apps[app].InputType; it != v.InputType {
			return conflict("model %q version %q: input_type %q: linked app %q takes %q", v.Model, v.Version, v.InputType, app, it)
		}
	}
	if i >= 0 {
		m.Versions[i] = v
	} else {
		m.Versions = append(m.Versions, v)
	}
	if m.CurrentVersion == "" {
		m.CurrentVersion = v.Version
	}
	if d.Models == nil {
		d.Models = make(map[string]Model)
	}
	d.Models[v.Model] = m
	return nil
}

func (d *Data) deleteVersion(model, version string) error {
	m, ok := d.Models[model]
	if !ok {
		return notFound("model %q", model)
	}
	i := slices.IndexFunc(m.Versions, func(o ModelVersion) bool { return o.Version == version })
	if i < 0 {
		return notFound("model %q version %q", model, version)
	}
	if m.CurrentVersion == version {
		if apps := d.appsOf(model); len(apps) > 0 {
			return conflict("model %q version %q: is the current version and the model is linked to apps %s; set another current version or unlink first",
				model, version, strings.Join(apps, ", "))
		}
		m.CurrentVersion = ""
	}
	m.Versions = slices.Delete(m.Versions, i, i+1)
	if len(m.Versions) == 0 {
		delete(d.Models, model)
	} else {
		d.Models[model] = m
	}
	if byVersion := d.Replicas[model]; byVersion != nil {
		delete(byVersion, version)
		if len(byVersion) == 0 {
			delete(d.Replicas, model)
		}
	}
	d.deleteProfile(model, version)
	return nil
}

func (d *Data) setCurrent(model, version string) error {
	m, ok := d.Models[model]
	if !ok {
		return notFound("model %q", model)
	}
	if _, ok := m.Version(version); !ok {
		return notFound("model %q version %q: cannot make it current", model, version)
	}
	if m.CurrentVersion == version {
		return errNoChange
	}
	// A rollout (or rollback) to an autoscaled version starts it at the
	// count the outgoing version serves with, within its bounds, so that
	// the traffic it takes over finds the replicas it needs.
	if old, ok := m.Version(m.CurrentVersion); ok {
		if i := slices.IndexFunc(m.Versions, func(o ModelVersion) bool { return o.Version == version }); m.Versions[i].Autoscale != nil {
			m.Versions = slices.Clone(m.Versions)
			m.Versions[i].Replicas = m.Versions[i].Autoscale.Clamp(old.Replicas)
		}
	}
	m.CurrentVersion = version
	d.Models[model] = m
	return nil
}

func (d *Data) link(app, model string) error {
	a, ok := d.Apps[app]
	if !ok {
		return notFound("app %q", app)
	}
	m, ok := d.Models[model]
	if !ok {
		return notFound("model %q", model)
	}
	if m.CurrentVersion == "" {
		return conflict("model %q: has no current version; deploy or set one before linking", model)
	}
	if it := m.InputType(); it != a.InputType {
		return conflict("app %q takes input_type %q but model %q takes %q", app, a.InputType, model, it)
	}
	models := d.Links[app]
	i, found := slices.BinarySearch(models, model)
	if found {
		return errNoChange
	}
	if d.Links == nil {
		d.Links = make(map[string][]string)
	}
	d.Links[app] = slices.Insert(models, i, model)
	return nil
}

func (d *Data) unlink(app, model string) error {
	if _, ok := d.Apps[app]; !ok {
		return notFound("app %q", app)
	}
	models := d.Links[app]
	i, found := slices.BinarySearch(models, model)
	if !found {
		return errNoChange
	}
	if len(models) == 1 {
		delete(d.Links, app)
	} else {
		d.Links[app] = slices.Delete(models, i, i+1)
	}
	return nil
}

func (d *Data) setReplicas(model, version string, addrs []string) error {
	m, ok := d.Models[model]
	if !ok {
		return notFound("model %q", model)
	}
	if _, ok := m.Version(version); !ok {
		return notFound("model %q version %q", model, version)
	}
	if slices.Equal(d.Replicas[model][version], addrs) {
		return errNoChange
	}
	if len(addrs) == 0 {
		delete(d.Replicas[model], version)
		if len(d.Replicas[model]) == 0 {
			delete(d.Replicas, model)
		}
		return nil
	}
	if d.Replicas == nil {
		d.Replicas = make(map[string]map[string][]string)
	}
	if d.Replicas[model] == nil {
		d.Replicas[model] = make(map[string][]string)
	}
	d.Replicas[model][version] = addrs
	return nil
}

// normalizeAddrs checks addrs and returns them sorted without duplicates,
// in a new slice.
func normalizeAddrs(model, version string, addrs []string) ([]string, error) {
	out := slices.Clone(addrs)
	for _, a := range out {
		if err := checkAddr(a); err != nil {
			return nil, invalid("model %q version %q: replicas: %v", model, version, err)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
