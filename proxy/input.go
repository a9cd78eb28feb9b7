package proxy

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

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
	size := 8
	if it != state.InputFloat64 {
		size = 4
	}
	out := make([]byte, 0, len(raw)/2*size)
	err := eachNumber(raw, func(i int, tok []byte) error {
		v, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(tok), len(tok)), 64)
		if err != nil {
			return fmt.Errorf("%w: %s[%d]: %s is not a number", ErrBadInput, what, i, clipToken(tok))
		}
		switch it {
		case state.InputFloat64:
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		case state.InputFloat32:
			if math.Abs(v) > math.MaxFloat32 {
				return fmt.Errorf("%w: %s[%d]: %s is out of float32 range", ErrBadInput, what, i, clipToken(tok))
			}
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(float32(v)))
		case state.InputInt32:
			if v != math.Trunc(v) || v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("%w: %s[%d]: %s is not an int32", ErrBadInput, what, i, clipToken(tok))
			}
			out = binary.LittleEndian.AppendUint32(out, uint32(int32(v)))
		}
		return nil
	})
	if errors.Is(err, errNotArray) {
		return nil, fmt.Errorf("%w: %s must be a JSON array of numbers for a %s app", ErrBadInput, what, it)
	}
	return out, err
}

var errNotArray = errors.New("not a JSON array")

// eachNumber calls f with each element of the flat JSON array raw, without
// allocating. An element that is not a bare number token (a string, an
// object, an array, null, true, false) is passed as its raw text so that f
// reports it; ParseFloat rejects all of them.
func eachNumber(raw []byte, f func(i int, tok []byte) error) error {
	p := skipSpace(raw, 0)
	if p >= len(raw) || raw[p] != '[' {
		return errNotArray
	}
	p = skipSpace(raw, p+1)
	if p < len(raw) && raw[p] == ']' {
		if skipSpace(raw, p+1) != len(raw) {
			return errNotArray
		}
		return nil
	}
	for i := 0; ; i++ {
		start := p
		end, err := skipValue(raw, p)
		if err != nil {
			return errNotArray
		}
		if err := f(i, raw[start:end]); err != nil {
			return err
		}
		p = skipSpace(raw, end)
		if p >= len(raw) {
			return errNotArray
		}
		switch raw[p] {
		case ',':
			p = skipSpace(raw, p+1)
		case ']':
			if skipSpace(raw, p+1) != len(raw) {
				return errNotArray
			}
			return nil
		default:
			return errNotArray
		}
	}
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// skipValue returns the end of the JSON value starting at p. raw has
// already been checked as valid JSON by the body's decoder, so this only
// needs to find boundaries: strings (with escapes) and nesting.
func skipValue(b []byte, p int) (int, error) {
	if p >= len(b) {
		return p, errNotArray
	}
	depth := 0
	for p < len(b) {
		switch c := b[p]; c {
		case '"':
			p++
			for p < len(b) && b[p] != '"' {
				if b[p] == '\\' {
					p++
				}
				p++
			}
			p++
		case '[', '{':
			depth++
			p++
		case ']', '}':
			if depth == 0 {
				return p, nil
			}
			depth--
			p++
		case ',':
			if depth == 0 {
				return p, nil
			}
			p++
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				return p, nil
			}
			p++
		default:
			p++
		}
	}
	if depth != 0 {
		return p, errNotArray
	}
	return p, nil
}

// clipToken shortens a JSON token for an error message.
func clipToken(b []byte) string {
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
