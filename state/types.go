package state

import (
	"encoding/json"
	"time"
)

// InputType names the type of every item of a query: the same names as
// containers/rpc's InputType.String, so rpc.ParseInputType(string(t)) converts.
type InputType string

// The input types a model can take.
const (
	InputBytes   InputType = "bytes"
	InputInt32   InputType = "int32"
	InputFloat32 InputType = "float32"
	InputFloat64 InputType = "float64"
	InputString  InputType = "string"
)

// Valid reports whether t is one of the known input types.
func (t InputType) Valid() bool {
	switch t {
	case InputBytes, InputInt32, InputFloat32, InputFloat64, InputString:
		return true
	}
	return false
}

// ElemSize is the byte size of one value of a numeric type in the RPC's
// encoding, or 1 for bytes and string, as containers/rpc's.
func (t InputType) ElemSize() int {
	switch t {
	case InputInt32, InputFloat32:
		return 4
	case InputFloat64:
		return 8
	}
	return 1
}

// RuntimeKind names how the replicas of a model version are started.
type RuntimeKind string

// The runtime kinds.
const (
	// RuntimeProcess runs a local command per replica (the embedded default).
	RuntimeProcess RuntimeKind = "process"
	// RuntimeExternal uses addresses of replicas someone else runs, such as
	// an orchestrator.
	RuntimeExternal RuntimeKind = "external"
	// RuntimeDocker runs a container per replica through the Docker Engine.
	RuntimeDocker RuntimeKind = "docker"
	// RuntimeSwarm runs a Docker Swarm service per version, its tasks the
	// replicas, on the swarm's nodes.
	RuntimeSwarm RuntimeKind = "swarm"
)

// App is an application: the unit a client queries, with its latency
// objective and what to answer when the objective cannot be met.
type App struct {
	// Name identifies the app in URLs; see ValidName.
	Name string `json:"name"`
	// InputType is the type of the app's inputs; every model linked to the
	// app takes the same type.
	InputType InputType `json:"input_type"`
	// SLO is the latency objective: a query's deadline is its arrival plus
	// SLO. It must be positive. In JSON it is "slo_ms", a number of
	// milliseconds that may have a fraction (0.5 is 500µs).
	SLO time.Duration `json:"-"`
	// DefaultOutput is returned, flagged as a default, when the deadline
	// passes before a model answers. Empty means an empty output.
	DefaultOutput string `json:"default_output,omitempty"`
	// Policy names the model selection policy; empty means a single model
	// (the one linked model). The selection package defines other names.
	Policy string `json:"policy,omitempty"`
	// Priority orders apps when load must be shed: lower priorities are
	// shed first. Zero is the default class; negative values are allowed.
	Priority int `json:"priority,omitempty"`
	// CacheTTL is how long the app's answers stay in the prediction cache.
	// Zero means the cache's default. In JSON it is "cache_ttl_s", a
	// number of seconds that may have a fraction.
	CacheTTL time.Duration `json:"-"`
	// NoCache keeps the app's answers out of the prediction cache: every
	// query of the app reaches a model.
	NoCache bool `json:"no_cache,omitempty"`
	// Inputs, when set, lays the app's input vector out as named parts,
	// in order: an Open Inference Protocol request then carries one
	// tensor per part, by name, which the proxy joins into the one vector
	// the RPC carries, and the query API's input must have their total
	// length, less the part a feature lookup fills (features.Spec.Input).
	// Only numeric input types have a layout. nil means one part,
	// "input", of any length.
	Inputs []InputPart `json:"inputs,omitempty"`
	// Selection, when set, is the selection policy's spec set through the
	// admin API, in the selection package's JSON form; it takes the place
	// of the configuration file's, and its policy of Policy. nil means
	// none. Only Store.UpdateApp sets or clears it: PutApp keeps it.
	Selection json.RawMessage `json:"selection,omitempty"`
	// Features, when set, is the app's feature lookup set through the
	// admin API, in the features package's JSON form; it takes the place
	// of the configuration file's. nil means none. Only Store.UpdateApp
	// sets or clears it: PutApp keeps it.
	Features json.RawMessage `json:"features,omitempty"`
}

// InputPart is one named part of an app's input vector.
type InputPart struct {
	// Name is the part's OIP input name; see ValidInputName.
	Name string `json:"name"`
	// Size is the number of values the part holds in each input.
	Size int `json:"size"`
}

// Part returns the named part of a's layout, the number of values
// before it in the input vector, and whether a has it.
func (a App) Part(name string) (part InputPart, offset int, ok bool) {
	for _, p := range a.Inputs {
		if p.Name == name {
			return p, offset, true
		}
		offset += p.Size
	}
	return InputPart{}, 0, false
}

// appJSON is App's wire form: SLO as fractional milliseconds, the cache
// TTL as fractional seconds.
type appJSON struct {
	appFields
	SLOMillis       float64 `json:"slo_ms"`
	CacheTTLSeconds float64 `json:"cache_ttl_s,omitempty"`
}

// appFields has App's fields without its methods, so encoding them does
// not recurse into App.MarshalJSON.
type appFields App

// MarshalJSON encodes the SLO as "slo_ms".
func (a App) MarshalJSON() ([]byte, error) {
	return json.Marshal(appJSON{appFields: appFields(a), SLOMillis: float64(a.SLO) / float64(time.Millisecond),
		CacheTTLSeconds: a.CacheTTL.Seconds()})
}

// UnmarshalJSON decodes "slo_ms", rounded to the nanosecond.
func (a *App) UnmarshalJSON(b []byte) error {
	var j appJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = App(j.appFields)
	a.SLO = roundDuration(j.SLOMillis, time.Millisecond)
	a.CacheTTL = roundDuration(j.CacheTTLSeconds, time.Second)
	return nil
}

// RuntimeSpec says how to run the replicas of a model version. Which fields
// apply depends on Kind; Validate rejects fields set for another kind.
type RuntimeSpec struct {
	// Kind is process, external, docker or swarm.
	Kind RuntimeKind `json:"kind"`

	// Command is the process runtime's command line (required for process).
	Command []string `json:"command,omitempty"`
	// Env holds extra environment variables for the process, docker and
	// swarm runtimes.
	Env map[string]string `json:"env,omitempty"`

	// Addresses are the host:port of replicas run by someone else
	// (required for external).
	Addresses []string `json:"addresses,omitempty"`

	// Image is the docker and swarm runtimes' image (required for both).
	// Image, CPUs, MemoryBytes, GPUs and DeviceIDs mean the same for a
	// swarm service's tasks as for docker containers; a swarm GPU is a
	// generic resource the nodes advertise.
	Image string `json:"image,omitempty"`
	// CPUs limits each container's CPU; zero means no limit.
	CPUs float64 `json:"cpus,omitempty"`
	// MemoryBytes limits each container's memory; zero means no limit.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// GPUs is how many GPUs each container gets: zero none, -1 all.
	// Exclusive with DeviceIDs.
	GPUs int `json:"gpus,omitempty"`
	// DeviceIDs names the GPUs each container gets. Exclusive with GPUs.
	DeviceIDs []string `json:"device_ids,omitempty"`
}

// ModelVersion is one deployable version of a model.
type ModelVersion struct {
	// Model is the model's name; see ValidName.
	Model string `json:"model"`
	// Version names the version within its model; see ValidName.
	Version string `json:"version"`
	// InputType is the type of the model's inputs; every version of a model
	// takes the same type.
	InputType InputType `json:"input_type"`
	// Runtime says how replicas are started.
	Runtime RuntimeSpec `json:"runtime"`
	// Replicas is the desired number of replicas, at least 1.
	Replicas int `json:"replicas"`
	// Autoscale, when set, has the autoscaler set Replicas from the
	// version's demand, within its bounds. nil means Replicas stays as
	// set.
	Autoscale *Autoscale `json:"autoscale,omitempty"`
	// BatchSize caps the batch size; zero means the batching controller's
	// default.
	BatchSize int `json:"batch_size,omitempty"`
	// Labels are free-form annotations (e.g. the framework).
	Labels map[string]string `json:"labels,omitempty"`
	// ExampleInput is one input in the query API's JSON form (an array of
	// numbers, a string, base64 for bytes) that profiling sends when its
	// request brings no inputs. Empty means none.
	ExampleInput json.RawMessage `json:"example_input,omitempty"`
}

// Model is a named model with its versions, one of which is current: the
// version that serves the apps the model is linked to.
type Model struct {
	// Name identifies the model.
	Name string `json:"name"`
	// CurrentVersion is the version that serves queries; empty only when
	// the current version was deleted while the model was linked to no app.
	// Setting it to an older version is a rollback.
	CurrentVersion string `json:"current_version"`
	// Versions lists the versions in the order they were first deployed,
	// oldest first.
	Versions []ModelVersion `json:"versions"`
}

// Version returns the version named v.
func (m Model) Version(v string) (ModelVersion, bool) {
	for _, mv := range m.Versions {
		if mv.Version == v {
			return mv, true
		}
	}
	return ModelVersion{}, false
}

// InputType returns the input type shared by the model's versions.
func (m Model) InputType() InputType {
	if len(m.Versions) == 0 {
		return ""
	}
	return m.Versions[0].InputType
}
