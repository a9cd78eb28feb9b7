package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"

	"github.com/sloproxy/sloproxy/state"
)

// The labels on every container this runtime creates. Owner tells whose a
// container is (Options.Owner); the others say which replica it is, and
// SpecLabel which spec it runs, so that a proxy that restarts adopts the
// containers that still match the state instead of starting duplicates.
const (
	OwnerLabel   = "io.sloproxy.owner"
	ModelLabel   = "io.sloproxy.model"
	VersionLabel = "io.sloproxy.version"
	ReplicaLabel = "io.sloproxy.replica"
	SpecLabel    = "io.sloproxy.spec"
)

// tmpfsDir is writable in every container, even with a read-only root.
const tmpfsDir = "/tmp"

// spec is what a replica's container runs: the parts of a ModelVersion
// that, changed, require a new container.
type spec struct {
	Image       string            `json:"image"`
	Env         map[string]string `json:"env,omitempty"`
	CPUs        float64           `json:"cpus,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	GPUs        int               `json:"gpus,omitempty"`
	DeviceIDs   []string          `json:"device_ids,omitempty"`
	InputType   state.InputType   `json:"input_type"`
}

func specOf(mv state.ModelVersion) spec {
	r := mv.Runtime
	return spec{Image: r.Image, Env: maps.Clone(r.Env), CPUs: r.CPUs, MemoryBytes: r.MemoryBytes,
		GPUs: r.GPUs, DeviceIDs: slices.Clone(r.DeviceIDs), InputType: mv.InputType}
}

// hash names the spec in SpecLabel: equal specs, equal hashes (encoding/json
// sorts map keys).
func (s spec) hash() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a struct of strings, numbers and maps of strings always encodes
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// containerPort is the port the model listens on inside its container.
func (o *Options) containerPort() nat.Port {
	return nat.Port(strconv.Itoa(o.ContainerPort) + "/tcp")
}

// config returns the container and host configuration of replica index of
// mv's key running s.
func (o *Options) config(model, version string, index int, s spec) (*container.Config, *container.HostConfig) {
	port := o.containerPort()
	env := make([]string, 0, len(s.Env)+3)
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		env = append(env, k+"="+s.Env[k])
	}
	// The contract's variables win over the spec's.
	env = append(env,
		"SLOPROXY_RPC_ADDR=0.0.0.0:"+strconv.Itoa(o.ContainerPort),
		"SLOPROXY_MODEL_NAME="+model,
		"SLOPROXY_MODEL_VERSION="+version,
	)
	cfg := &container.Config{
		Image:        s.Image,
		Env:          env,
		ExposedPorts: nat.PortSet{port: struct{}{}},
		Labels: map[string]string{
			OwnerLabel:   o.Owner,
			ModelLabel:   model,
			VersionLabel: version,
			ReplicaLabel: strconv.Itoa(index),
			SpecLabel:    s.hash(),
		},
	}
	host := &container.HostConfig{
		// Loopback only: replicas are reached by the proxies on this
		// machine, never from outside it.
		PortBindings: nat.PortMap{port: []nat.PortBinding{{HostIP: "127.0.0.1"}}},
		NetworkMode:  container.NetworkMode(o.Network),
		// The runtime restarts replicas itself, with backoff, and must
		// see every exit: no restart policy, no auto-remove (the logs of
		// a container that died are read before it is removed).
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: !o.WritableRoot,
		Tmpfs:          map[string]string{tmpfsDir: ""},
		LogConfig:      container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
		Resources: container.Resources{
			NanoCPUs:       int64(s.CPUs * 1e9),
			Memory:         s.MemoryBytes,
			DeviceRequests: deviceRequests(s),
		},
	}
	return cfg, host
}

// deviceRequests asks for GPUs as `docker run --gpus` does: a count (-1
// for all) or device ids, with the "gpu" capability.
func deviceRequests(s spec) []container.DeviceRequest {
	switch {
	case len(s.DeviceIDs) > 0:
		return []container.DeviceRequest{{DeviceIDs: slices.Clone(s.DeviceIDs), Capabilities: [][]string{{"gpu"}}}}
	case s.GPUs != 0:
		return []container.DeviceRequest{{Count: s.GPUs, Capabilities: [][]string{{"gpu"}}}}
	}
	return nil
}

// containerName is a fresh name for a container of replica index: readable
// in `docker ps`, unique thanks to the nonce.
func (o *Options) containerName(model, version string, index int, nonce string) string {
	return fmt.Sprintf("%s-%s-%s-%d-%s", o.Owner, model, version, index, nonce)
}
