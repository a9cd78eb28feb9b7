package proxy

import (
	"encoding/json"

	"github.com/sloproxy/sloproxy/state"
)

// EncodeInput turns one JSON input, as a query sends it, into the RPC item
// bytes of input type it (see docs/http.md); errors wrap ErrBadInput.
// Profiling (containers/profile) reads its inputs with it, so that they
// mean what a query's would.
func EncodeInput(raw json.RawMessage, it state.InputType) ([]byte, error) {
	return encodeInput(raw, it, "input")
}
