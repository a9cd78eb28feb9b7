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
	return encodeInputAt(raw, it, inputName{name: what})
}

// inputName names an input in errors, formatted only when there is one:
// a name alone, an element of a batch ("input_batch[3]") or a row of an
// OIP input tensor (`input "x" row 3`).
type inputName struct {
	name string
	row  int
	kind inputNameKind
}

type inputNameKind uint8

const (
	nameAlone     inputNameKind = iota
	nameElement                 // name[row]
	nameTensorRow               // input "name" row row
)

func (n inputName) String() string {
	switch n.kind {
	case nameElement:
		return n.name + "[" + strconv.Itoa(n.row) + "]"
	case nameTensorRow:
		return "input " + strconv.Quote(n.name) + " row " + strconv.Itoa(n.row)
	}
	return n.name
}

// encodeInputAt is encodeInput, with what named by an inputName.
func encodeInputAt(raw json.RawMessage, it state.InputType, what inputName) ([]byte, error) {
	switch it {
	case state.InputString, state.InputBytes:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%w: %s must be a JSON string for a %s app", ErrBadInput, what, it)
		}
		if it == state.InputString {
			// The body is valid UTF-8 (see checkUTF8), but a \u escape
			// may still name half of a UTF-16 pair, which the decoder
			// turns into U+FFFD: the model would get other text than
			// the client sent.
			if at := loneSurrogate(raw); at >= 0 {
				return nil, fmt.Errorf("%w: %s: the escape %s at byte %d of its JSON text is a lone UTF-16 surrogate; strings must be valid Unicode", ErrBadInput, what, raw[at:at+6], at)
			}
			return []byte(s), nil
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s must be base64 for a bytes app: %v", ErrBadInput, what, err)
		}
		return b, nil
	}
	out := make([]byte, 0, len(raw)/2*it.ElemSize())
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

// checkUTF8 refuses a body that is not valid UTF-8, naming the offset of
// the first byte that starts no valid character. JSON text must be UTF-8
// (RFC 8259); the decoder would turn such bytes in a string into U+FFFD
// and the model would get other text than the client sent.
func checkUTF8(body []byte) error {
	if utf8.Valid(body) {
		return nil
	}
	for i := 0; i < len(body); {
		r, size := utf8.DecodeRune(body[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Errorf("%w: the body is not valid UTF-8: byte %d (0x%02x) starts no valid character; strings must be UTF-8", ErrBadInput, i, body[i])
		}
		i += size
	}
	return nil
}

// loneSurrogate returns the offset in the JSON string raw of a \u escape
// that is half of a UTF-16 surrogate pair without its other half, or -1
// when there is none.
func loneSurrogate(raw []byte) int {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := escapedRune(raw, i)
		switch {
		case !ok:
			i++ // another escape: skip its second byte
		case r >= 0xDC00 && r < 0xE000:
			return i // a low half first
		case r >= 0xD800 && r < 0xDC00:
			if low, ok := escapedRune(raw, i+6); !ok || low < 0xDC00 || low >= 0xE000 {
				return i
			}
			i += 11
		default:
			i += 5
		}
	}
	return -1
}

// escapedRune reads the escape \uXXXX at raw[i:]; false when there is
// none.
func escapedRune(raw []byte, i int) (rune, bool) {
	if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}

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
