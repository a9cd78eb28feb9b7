package proxy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/state"
)

// encodeInput turns one JSON input into the RPC item bytes of type it: a
// JSON array of numbers for int32, float32 and float64, a string for
// string, base64 in a string for bytes. what names the input in errors.
func encodeInput(raw json.RawMessage, it state.InputType, what string) ([]byte, error) {
	switch it {
	case state.InputString, state.InputBytes:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%w: %s must be a JSON string for a %s app", ErrBadInput, what, it)
		}
		if it == state.InputString {
			return []byte(s), nil
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s must be base64 for a bytes app: %v", ErrBadInput, what, err)
		}
		return b, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, fmt.Errorf("%w: %s must be a JSON array of numbers for a %s app", ErrBadInput, what, it)
	}
	size := 8
	if it != state.InputFloat64 {
		size = 4
	}
	out := make([]byte, 0, len(elems)*size)
	for i, e := range elems {
		v, err := strconv.ParseFloat(string(e), 64)
		if err != nil || len(e) == 0 || e[0] == '"' {
			return nil, fmt.Errorf("%w: %s[%d]: %s is not a number", ErrBadInput, what, i, clip(e))
		}
		switch it {
		case state.InputFloat64:
			out = rpc.AppendFloat64s(out, []float64{v})
		case state.InputFloat32:
			if math.Abs(v) > math.MaxFloat32 {
				return nil, fmt.Errorf("%w: %s[%d]: %s is out of float32 range", ErrBadInput, what, i, clip(e))
			}
			out = rpc.AppendFloat32s(out, []float32{float32(v)})
		case state.InputInt32:
			if v != math.Trunc(v) || v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("%w: %s[%d]: %s is not an int32", ErrBadInput, what, i, clip(e))
			}
			out = rpc.AppendInt32s(out, []int32{int32(v)})
		}
	}
	return out, nil
}

// clip shortens a JSON token for an error message.
func clip(b []byte) string {
	const n = 40
	if len(b) <= n {
		return string(b)
	}
	s := b[:n]
	for !utf8.Valid(s) {
		s = s[:len(s)-1]
	}
	return string(s) + "…"
}
