package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sloproxy/sloproxy/internal/clip"
)

// ValidName reports whether s can name an app, a model or a version:
// [a-z0-9][a-z0-9_.-]{0,62}. Such names are safe in URLs, Redis keys,
// metric labels and Docker container names.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// maxSLO bounds an app's SLO; anything longer is surely a unit mistake.
const maxSLO = time.Hour

// Validate checks a's fields on their own; the Store also checks them
// against the rest of the state.
func (a App) Validate() error {
	if !ValidName(a.Name) {
		return invalid("app %q: name: must match [a-z0-9][a-z0-9_.-]{0,62}", clip.String(a.Name))
	}
	if !a.InputType.Valid() {
		return invalid("app %q: input_type %q: must be bytes, int32, float32, float64 or string", a.Name, clip.String(string(a.InputType)))
	}
	if a.SLO <= 0 || a.SLO > maxSLO {
		return invalid("app %q: slo_ms %g: must be positive and at most %v", a.Name, float64(a.SLO)/float64(time.Millisecond), maxSLO)
	}
	if a.CacheTTL < 0 || a.CacheTTL > maxCacheTTL {
		return invalid("app %q: cache_ttl_s %g: must be between 0 (the cache's default) and %v", a.Name, a.CacheTTL.Seconds(), maxCacheTTL)
	}
	return a.validateInputs()
}

// maxInputPart bounds the values of one part of an app's input layout,
// and of all its parts together: a million, beyond any model's feature
// vector and any request's limit.
const maxInputPart = 1 << 20

// maxInputParts bounds the parts of an app's input layout, beyond any
// model's list of named inputs.
const maxInputParts = 256

// validateInputs checks a's input layout: numeric inputs, at most
// maxInputParts named parts of a positive size, each name once.
func (a App) validateInputs() error {
	if a.Inputs == nil {
		return nil
	}
	switch a.InputType {
	case InputFloat32, InputFloat64, InputInt32:
	default:
		return invalid("app %q: inputs: an input of type %s has no layout; only float32, float64 and int32 inputs have parts", a.Name, a.InputType)
	}
	if len(a.Inputs) == 0 || len(a.Inputs) > maxInputParts {
		return invalid("app %q: inputs: %d parts; list 1 to %d, or leave inputs out", a.Name, len(a.Inputs), maxInputParts)
	}
	seen := make(map[string]bool, len(a.Inputs))
	total := 0
	for i, p := range a.Inputs {
		switch {
		case !ValidInputName(p.Name):
			return invalid("app %q: inputs[%d]: name %q: must match [A-Za-z_][A-Za-z0-9_.:-]{0,62}", a.Name, i, clip.String(p.Name))
		case p.Size < 1 || p.Size > maxInputPart:
			return invalid("app %q: inputs[%d] %q: size %d: must be between 1 and %d", a.Name, i, p.Name, p.Size, maxInputPart)
		case seen[p.Name]:
			return invalid("app %q: inputs[%d]: %q is listed twice", a.Name, i, p.Name)
		}
		seen[p.Name] = true
		if total += p.Size; total > maxInputPart {
			return invalid("app %q: inputs: more than %d values in all", a.Name, maxInputPart)
		}
	}
	return nil
}

// ValidInputName reports whether s can name a part of an app's input:
// [A-Za-z_][A-Za-z0-9_.:-]{0,62}, as OIP clients name tensors.
func ValidInputName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// maxCacheTTL bounds an app's cache TTL: a month.
const maxCacheTTL = 30 * 24 * time.Hour

// Validate checks v's fields on their own; the Store also checks them
// against the rest of the state.
func (v ModelVersion) Validate() error {
	if !ValidName(v.Model) {
		return invalid("model %q: name: must match [a-z0-9][a-z0-9_.-]{0,62}", v.Model)
	}
	if !ValidName(v.Version) {
		return invalid("model %q version %q: version: must match [a-z0-9][a-z0-9_.-]{0,62}", v.Model, v.Version)
	}
	if !v.InputType.Valid() {
		return invalid("model %q version %q: input_type %q: must be bytes, int32, float32, float64 or string", v.Model, v.Version, v.InputType)
	}
	if v.Replicas < 1 {
		return invalid("model %q version %q: replicas %d: must be at least 1", v.Model, v.Version, v.Replicas)
	}
	if v.BatchSize < 0 {
		return invalid("model %q version %q: batch_size %d: must not be negative", v.Model, v.Version, v.BatchSize)
	}
	if v.Autoscale != nil {
		if err := v.Autoscale.check(); err != nil {
			return invalid("model %q version %q: %v", v.Model, v.Version, err)
		}
	}
	if err := v.Runtime.check(); err != nil {
		return invalid("model %q version %q: %v", v.Model, v.Version, err)
	}
	if len(v.ExampleInput) > 0 && !json.Valid(v.ExampleInput) {
		return invalid("model %q version %q: example_input: not JSON", v.Model, v.Version)
	}
	return nil
}

// Validate checks that the fields of r's kind are set and that no field of
// another kind is: a docker image on a process runtime is a mistake worth
// reporting.
func (r RuntimeSpec) Validate() error {
	if err := r.check(); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// check is Validate without the ErrInvalid wrapping, for callers that add
// context first.
func (r RuntimeSpec) check() error {
	var unused []string // fields set that the kind does not use
	unusedIf := func(name string, isSet bool) {
		if isSet {
			unused = append(unused, name)
		}
	}
	switch r.Kind {
	case RuntimeProcess:
		if len(r.Command) == 0 || r.Command[0] == "" {
			return errors.New("runtime.command: required for the process runtime")
		}
	case RuntimeExternal:
		if len(r.Addresses) == 0 {
			return errors.New("runtime.addresses: required for the external runtime")
		}
		for _, a := range r.Addresses {
			if err := checkAddr(a); err != nil {
				return fmt.Errorf("runtime.addresses: %w", err)
			}
		}
	case RuntimeDocker, RuntimeSwarm:
		switch {
		case r.Image == "":
			return fmt.Errorf("runtime.image: required for the %s runtime", r.Kind)
		case r.Kind == RuntimeSwarm && r.GPUs < 0:
			return fmt.Errorf("runtime.gpus %d: the swarm runtime takes a count of the nodes' generic GPU resources, not all", r.GPUs)
		case r.CPUs < 0:
			return fmt.Errorf("runtime.cpus %g: must not be negative", r.CPUs)
		case r.MemoryBytes < 0:
			return fmt.Errorf("runtime.memory_bytes %d: must not be negative", r.MemoryBytes)
		case r.GPUs < -1:
			return fmt.Errorf("runtime.gpus %d: must be -1 (all), 0 or a count", r.GPUs)
		case r.GPUs != 0 && len(r.DeviceIDs) > 0:
			return errors.New("runtime.gpus, runtime.device_ids: set one, not both")
		}
	default:
		return fmt.Errorf("runtime.kind %q: must be process, external, docker or swarm", r.Kind)
	}
	if r.Kind != RuntimeProcess {
		unusedIf("command", len(r.Command) > 0)
	}
	if r.Kind == RuntimeExternal {
		unusedIf("env", len(r.Env) > 0)
	}
	if r.Kind != RuntimeExternal {
		unusedIf("addresses", len(r.Addresses) > 0)
	}
	if r.Kind != RuntimeDocker && r.Kind != RuntimeSwarm {
		unusedIf("image", r.Image != "")
		unusedIf("cpus", r.CPUs != 0)
		unusedIf("memory_bytes", r.MemoryBytes != 0)
		unusedIf("gpus", r.GPUs != 0)
		unusedIf("device_ids", len(r.DeviceIDs) > 0)
	}
	if len(unused) > 0 {
		return fmt.Errorf("runtime.%s: not used by the %s runtime", unused[0], r.Kind)
	}
	return nil
}

// checkAddr checks that a is host:port with a non-empty host and a port in
// 1..65535.
func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("address %q: host: required", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port: must be 1..65535", a)
	}
	return nil
}
