package runtime

import (
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/state"
)

// Secret is the RPC secret that the replicas of version of model, started
// by the runtime of kind, ask their peers to prove: rpc.DeriveSecret under
// key for a swarm version, whose replicas listen off loopback, and nil for
// every other kind or when key is nil (no secret asked).
func Secret(key []byte, kind state.RuntimeKind, model, version string) []byte {
	if kind != state.RuntimeSwarm || key == nil {
		return nil
	}
	return []byte(rpc.DeriveSecret(key, model, version))
}
