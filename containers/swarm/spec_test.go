package swarm

import (
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/swarm"
	"go.uber.org/goleak"

	"github.com/sloproxy/sloproxy/containers/docker"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testOptions() Options {
	o := Options{Owner: "team", RPCKey: []byte("key"), Constraints: []string{"node.labels.gpu==true"}, Preferences: []string{"node.labels.zone"}}
	o.setDefaults()
	return o
}

func version(rs state.RuntimeSpec) state.ModelVersion {
	rs.Kind = state.RuntimeSwarm
	if rs.Image == "" {
		rs.Image = "img:1"
	}
	return state.ModelVersion{Model: "digits", Version: "1.2", InputType: state.InputFloat32, Replicas: 3, Runtime: rs}
}

// TestServiceSpec checks what a version's service asks of Swarm: the
// contract's environment with the version's derived secret, the labels,
// limits equal to reservations, GPUs as generic resources, placement,
// host-mode publishing, and start-first updates that roll back.
func TestServiceSpec(t *testing.T) {
	o := testOptions()
	mv := version(state.RuntimeSpec{Env: map[string]string{"B": "2", "A": "1"}, CPUs: 1.5, MemoryBytes: 1 << 30, GPUs: 2})
	s := o.serviceSpec(mv)
	wantEnv := []string{"A=1", "B=2", "SLOPROXY_RPC_ADDR=0.0.0.0:7000", "SLOPROXY_MODEL_NAME=digits", "SLOPROXY_MODEL_VERSION=1.2",
		rpc.SecretEnv + "=" + rpc.DeriveSecret([]byte("key"), "digits", "1.2")}
	cs := s.TaskTemplate.ContainerSpec
	if !slices.Equal(cs.Env, wantEnv) {
		t.Errorf("env %q, want %q", cs.Env, wantEnv)
	}
	if s.Labels[docker.OwnerLabel] != "team" || s.Labels[docker.ModelLabel] != "digits" || s.Labels[docker.VersionLabel] != "1.2" || s.Labels[docker.SpecLabel] == "" {
		t.Errorf("labels %v", s.Labels)
	}
	res := s.TaskTemplate.Resources
	if res.Limits.NanoCPUs != 1.5e9 || res.Limits.MemoryBytes != 1<<30 || res.Reservations.NanoCPUs != 1.5e9 || res.Reservations.MemoryBytes != 1<<30 {
		t.Errorf("resources %+v %+v: want 1.5 CPUs and 1 GiB, limited and reserved", res.Limits, res.Reservations)
	}
	if g := res.Reservations.GenericResources; len(g) != 1 || g[0].DiscreteResourceSpec == nil || *g[0].DiscreteResourceSpec != (swarm.DiscreteGenericResource{Kind: DefaultGPUResource, Value: 2}) {
		t.Errorf("generic resources %+v, want 2 %s", g, DefaultGPUResource)
	}
	p := s.TaskTemplate.Placement
	if !slices.Equal(p.Constraints, o.Constraints) || len(p.Preferences) != 1 || p.Preferences[0].Spread.SpreadDescriptor != "node.labels.zone" {
		t.Errorf("placement %+v", p)
	}
	if ports := s.EndpointSpec.Ports; len(ports) != 1 || ports[0].PublishMode != swarm.PortConfigPublishModeHost || ports[0].TargetPort != 7000 || ports[0].PublishedPort != 0 {
		t.Errorf("ports %+v, want 7000 published in host mode on a port the node picks", ports)
	}
	if u := s.UpdateConfig; u.Order != swarm.UpdateOrderStartFirst || u.FailureAction != swarm.UpdateFailureActionRollback || u.Parallelism != 1 {
		t.Errorf("update config %+v", u)
	}
	if *s.Mode.Replicated.Replicas != 3 || !cs.ReadOnly || !slices.Equal(cs.CapabilityDrop, []string{"ALL"}) {
		t.Errorf("replicas %d, read-only %v, capabilities dropped %v", *s.Mode.Replicated.Replicas, cs.ReadOnly, cs.CapabilityDrop)
	}

	ids := o.serviceSpec(version(state.RuntimeSpec{DeviceIDs: []string{"GPU-a", "GPU-b"}})).TaskTemplate.Resources.Reservations.GenericResources
	if len(ids) != 2 || ids[0].NamedResourceSpec.Value != "GPU-a" || ids[1].NamedResourceSpec.Kind != DefaultGPUResource {
		t.Errorf("named generic resources %+v", ids)
	}
}

// TestSpecHash checks that the spec label changes with what the tasks
// run, and not with the replica count, which is updated alone.
func TestSpecHash(t *testing.T) {
	o := testOptions()
	base := version(state.RuntimeSpec{CPUs: 1})
	hash := func(mv state.ModelVersion) string { return o.serviceSpec(mv).Labels[docker.SpecLabel] }
	scaled := base
	scaled.Replicas = 7
	if hash(scaled) != hash(base) {
		t.Error("the replica count changed the spec hash")
	}
	for name, change := range map[string]func(*state.ModelVersion){
		"image": func(mv *state.ModelVersion) { mv.Runtime.Image = "img:2" },
		"env":   func(mv *state.ModelVersion) { mv.Runtime.Env = map[string]string{"X": "1"} },
		"cpus":  func(mv *state.ModelVersion) { mv.Runtime.CPUs = 2 },
	} {
		mv := base
		change(&mv)
		if hash(mv) == hash(base) {
			t.Errorf("a changed %s kept the spec hash", name)
		}
	}
}

func TestServiceName(t *testing.T) {
	o := testOptions()
	for _, tc := range []struct{ model, version string }{
		{"digits", "1.2"},
		{"digits", "1-2"},
		{strings.Repeat("m", 63), strings.Repeat("v", 63)},
	} {
		n := o.serviceName(tc.model, tc.version)
		if len(n) > 63 || strings.ContainsAny(n, ".") || !strings.HasPrefix(n, "team-") {
			t.Errorf("serviceName(%q, %q) = %q: want at most 63 characters, no dots, the owner first", tc.model, tc.version, n)
		}
	}
	if o.serviceName("digits", "1.2") == o.serviceName("digits", "1-2") {
		t.Error("versions 1.2 and 1-2 share a service name")
	}
}
