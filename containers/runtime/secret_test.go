package runtime

import (
	"testing"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/state"
)

func TestSecret(t *testing.T) {
	key := []byte("key")
	if got, want := string(Secret(key, state.RuntimeSwarm, "m", "1")), rpc.DeriveSecret(key, "m", "1"); got != want {
		t.Errorf("swarm: Secret = %q, want %q", got, want)
	}
	if got := Secret(nil, state.RuntimeSwarm, "m", "1"); got != nil {
		t.Errorf("swarm without a key: Secret = %q, want nil", got)
	}
	for _, kind := range []state.RuntimeKind{state.RuntimeProcess, state.RuntimeExternal, state.RuntimeDocker} {
		if got := Secret(key, kind, "m", "1"); got != nil {
			t.Errorf("%s: Secret = %q, want nil", kind, got)
		}
	}
}
