package docker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/state"
)

// fakeEngine answers the Engine API's ping and container create, and keeps
// the create request's body: no GPU is here, so the device requests are
// checked as the client sends them.
type fakeEngine struct {
	mu     sync.Mutex
	create []byte
	query  string
}

func (f *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/_ping"):
		w.Header().Set("Api-Version", "1.41")
		_, _ = io.WriteString(w, "OK")
	case strings.HasSuffix(r.URL.Path, "/containers/create"):
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.create, f.query = body, r.URL.RawQuery
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"Id": "c0ffee", "Warnings": []}`)
	default:
		http.Error(w, `{"message": "not in this fake"}`, http.StatusNotFound)
	}
}

// createRequest has the replica of mv create its container against a fake
// Engine and returns the request body the client sent.
func createRequest(t *testing.T, mv state.ModelVersion) (body map[string]any, query string) {
	t.Helper()
	fake := &fakeEngine{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	engine, err := client.NewClientWithOpts(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	opts := Options{}
	opts.setDefaults()
	r := &Runtime{opts: opts, log: zap.NewNop(), engine: engine}
	rep := &replica{rt: r, key: runtime.VersionKey{Model: mv.Model, Version: mv.Version}, index: 1, spec: specOf(mv), log: zap.NewNop()}
	id, err := rep.create(context.Background())
	if err != nil || id != "c0ffee" {
		t.Fatalf("create = %q, %v", id, err)
	}
	if err := json.Unmarshal(fake.create, &body); err != nil {
		t.Fatalf("create body %s: %v", fake.create, err)
	}
	return body, fake.query
}

func gpuVersion(gpus int, ids ...string) state.ModelVersion {
	return state.ModelVersion{Model: "mnist", Version: "3", InputType: state.InputFloat32, Replicas: 1,
		Runtime: state.RuntimeSpec{Kind: state.RuntimeDocker, Image: "mnist:3", CPUs: 1.5, MemoryBytes: 256 << 20,
			GPUs: gpus, DeviceIDs: ids, Env: map[string]string{"B": "2", "A": "1", "SLOPROXY_MODEL_NAME": "overridden"}}}
}

func TestCreateRequestGPUs(t *testing.T) {
	for _, tc := range []struct {
		name string
		mv   state.ModelVersion
		want any
	}{
		{"none", gpuVersion(0), nil},
		{"count", gpuVersion(2), []any{map[string]any{"Driver": "", "Count": 2.0, "DeviceIDs": nil,
			"Capabilities": []any{[]any{"gpu"}}, "Options": nil}}},
		{"all", gpuVersion(-1), []any{map[string]any{"Driver": "", "Count": -1.0, "DeviceIDs": nil,
			"Capabilities": []any{[]any{"gpu"}}, "Options": nil}}},
		{"ids", gpuVersion(0, "0", "GPU-3f2c"), []any{map[string]any{"Driver": "", "Count": 0.0, "DeviceIDs": []any{"0", "GPU-3f2c"},
			"Capabilities": []any{[]any{"gpu"}}, "Options": nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := createRequest(t, tc.mv)
			host := body["HostConfig"].(map[string]any)
			if got := host["DeviceRequests"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DeviceRequests = %#v, want %#v", got, tc.want)
			}
		})
	}
}

// TestCreateRequestIsolation checks the rest of what a container gets:
// labels, environment, loopback-only port, limits and no privileges.
func TestCreateRequestIsolation(t *testing.T) {
	mv := gpuVersion(0)
	body, query := createRequest(t, mv)
	if !strings.Contains(query, "name=sloproxy-mnist-3-1-") {
		t.Errorf("query %q: want the container named sloproxy-mnist-3-1-<nonce>", query)
	}
	labels := body["Labels"].(map[string]any)
	for k, v := range map[string]string{OwnerLabel: "sloproxy", ModelLabel: "mnist", VersionLabel: "3", ReplicaLabel: "1", SpecLabel: specOf(mv).hash()} {
		if labels[k] != v {
			t.Errorf("label %s = %v, want %s", k, labels[k], v)
		}
	}
	wantEnv := []any{"A=1", "B=2", "SLOPROXY_MODEL_NAME=overridden", "SLOPROXY_RPC_ADDR=0.0.0.0:7000",
		"SLOPROXY_MODEL_NAME=mnist", "SLOPROXY_MODEL_VERSION=3"}
	if env := body["Env"]; !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("Env = %v, want %v (the contract's variables last, so they win)", env, wantEnv)
	}
	host := body["HostConfig"].(map[string]any)
	wantPorts := map[string]any{"7000/tcp": []any{map[string]any{"HostIp": "127.0.0.1", "HostPort": ""}}}
	if got := host["PortBindings"]; !reflect.DeepEqual(got, wantPorts) {
		t.Errorf("PortBindings = %v, want %v", got, wantPorts)
	}
	for k, want := range map[string]any{
		"NanoCpus":       1.5e9,
		"Memory":         float64(256 << 20),
		"CapDrop":        []any{"ALL"},
		"SecurityOpt":    []any{"no-new-privileges"},
		"ReadonlyRootfs": true,
		"Privileged":     false,
		"Tmpfs":          map[string]any{"/tmp": ""},
		"RestartPolicy":  map[string]any{"Name": string(container.RestartPolicyDisabled), "MaximumRetryCount": 0.0},
	} {
		if got := host[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("HostConfig.%s = %#v, want %#v", k, got, want)
		}
	}
}

func TestSpecHash(t *testing.T) {
	a, b := specOf(gpuVersion(1)), specOf(gpuVersion(1))
	if a.hash() != b.hash() {
		t.Error("equal specs hash differently")
	}
	if c := specOf(gpuVersion(2)); c.hash() == a.hash() {
		t.Error("specs that differ in GPUs hash alike")
	}
}
