package proxy

import (
	"github.com/sloproxy/sloproxy/features"
	"github.com/sloproxy/sloproxy/state"
)

// TensorMetadata describes one input or output tensor of a model.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the OIP model metadata of a model or an app.
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// ServerReady returns nil when the proxy can serve by its Readiness rule,
// else an ErrUnavailable naming what is not ready.
func (p *Proxy) ServerReady() error { return p.checkReady(p.opts.Store.Snapshot()) }

// ModelReady returns nil when the model's version (its current one for
// "") has a ready replica on this proxy, or, for the name of an app that
// no model has, when the app has one; else an ErrNotFound or an
// ErrUnavailable saying why.
func (p *Proxy) ModelReady(model, version string) error {
	snap := p.opts.Store.Snapshot()
	_, mv, err := modelVersion(snap, model, version)
	if app, ok := snap.App(model); err != nil && ok && version == "" {
		if !p.ready.Load() {
			return errorf(ErrUnavailable, "the proxy is starting or shutting down")
		}
		if why := p.appReady(snap, app); why != "" {
			return errorf(ErrUnavailable, "app %s: %s", app.Name, why)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !p.ready.Load() {
		return errorf(ErrUnavailable, "the proxy is starting or shutting down")
	}
	if why := p.VersionReady(mv); why != "" {
		return errorf(ErrUnavailable, "%s", why)
	}
	return nil
}

// ModelMetadata returns the OIP metadata of a model's version (its
// current one for ""), or of an app no model shares a name with: its
// input or the parts of its layout the request carries, and the BYTES
// inputs of the entity ids its features are looked up by.
func (p *Proxy) ModelMetadata(model, version string) (*ModelMetadata, error) {
	snap := p.opts.Store.Snapshot()
	m, mv, err := modelVersion(snap, model, version)
	if app, ok := snap.App(model); err != nil && ok && version == "" {
		md := &ModelMetadata{Name: app.Name, Versions: []string{}, Platform: "sloproxy", Outputs: outputMetadata}
		l := p.opts.Features.For(app)
		md.Inputs = appInputs(app, l)
		if l != nil {
			for _, k := range l.KeyFields() {
				md.Inputs = append(md.Inputs, TensorMetadata{Name: k, Datatype: "BYTES", Shape: []int64{-1}})
			}
		}
		return md, nil
	}
	if err != nil {
		return nil, err
	}
	md := &ModelMetadata{Name: m.Name, Versions: make([]string, len(m.Versions)), Platform: "sloproxy",
		Inputs: []TensorMetadata{inputMetadata(mv.InputType)}, Outputs: outputMetadata}
	for i, v := range m.Versions {
		md.Versions[i] = v.Version
	}
	return md, nil
}

var outputMetadata = []TensorMetadata{{Name: "output", Datatype: "BYTES", Shape: []int64{-1}}}

// appInputs describes the data inputs of app, whose feature lookup is
// l (nil for none): the parts of its layout but the one the features
// fill, else its one input.
func appInputs(app state.App, l *features.Lookup) []TensorMetadata {
	carried := layoutOf(app, l).carried
	if carried == nil {
		return []TensorMetadata{inputMetadata(app.InputType)}
	}
	md := make([]TensorMetadata, len(carried))
	for i, part := range carried {
		md[i] = TensorMetadata{Name: part.Name, Datatype: oipDatatype(app.InputType), Shape: []int64{-1, int64(part.Size)}}
	}
	return md
}

func inputMetadata(it state.InputType) TensorMetadata {
	shape := []int64{-1, -1}
	if oipDatatype(it) == "BYTES" {
		shape = []int64{-1}
	}
	return TensorMetadata{Name: "input", Datatype: oipDatatype(it), Shape: shape}
}
