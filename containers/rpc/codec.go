// Package rpc implements the model-container RPC contract described in
// docs/rpc.md: the frame codec, a pipelining client for the proxy side, and a
// server SDK that a Go model implements with one small interface.
package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// Version is the contract version this package speaks.
const Version = 1

// Limits of the contract.
const (
	// DefaultMaxFrame is the largest frame length (type byte plus payload)
	// accepted unless a receiver declares less.
	DefaultMaxFrame = 64 << 20
	// MaxBatch is the most items one PREDICT may carry.
	MaxBatch = 65536
	// maxStr16 is the longest str16 field.
	maxStr16 = 65535
)

// Message types.
const (
	TypeHello   byte = 1
	TypePredict byte = 2
	TypeResult  byte = 3
	TypeError   byte = 4
	TypePing    byte = 5
	TypePong    byte = 6
)

// InputType is the type of every item of a request.
type InputType uint8

// Input types.
const (
	Bytes   InputType = 1
	Int32   InputType = 2
	Float32 InputType = 3
	Float64 InputType = 4
	String  InputType = 5
)

var inputTypeNames = [...]string{"", "bytes", "int32", "float32", "float64", "string"}

// Valid reports whether t is one of the five input types.
func (t InputType) Valid() bool { return t >= Bytes && t <= String }

// ElemSize is the byte size of one element of a numeric type, or 1 for bytes
// and string.
func (t InputType) ElemSize() int {
	switch t {
	case Int32, Float32:
		return 4
	case Float64:
		return 8
	}
	return 1
}

func (t InputType) String() string {
	if t.Valid() {
		return inputTypeNames[t]
	}
	return fmt.Sprintf("InputType(%d)", uint8(t))
}

// ParseInputType maps a name such as "float32" to its InputType.
func ParseInputType(s string) (InputType, error) {
	for i := Bytes; i <= String; i++ {
		if inputTypeNames[i] == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown input type %q (want bytes, int32, float32, float64 or string)", s)
}

// Message is one of *Hello, *Predict, *Result, *Error, *Ping, *Pong, *Auth.
type Message interface {
	// Type is the frame type byte.
	Type() byte
	appendPayload(dst []byte) []byte
}

// Hello is sent by a container when a connection opens.
type Hello struct {
	Version      uint16
	InputType    InputType
	MaxBatch     uint32 // 0: no limit of the container's own
	MaxFrame     uint32 // 0: DefaultMaxFrame
	Model        string
	ModelVersion string
	// AuthNonce, when not empty, asks the proxy to authenticate with an
	// AUTH frame before anything else (see AuthMAC). Empty means the
	// container serves without authentication.
	AuthNonce []byte
}

// Predict carries a batch of inputs.
type Predict struct {
	ID        uint64
	Deadline  int64 // Unix nanoseconds; 0 means none
	InputType InputType
	Inputs    [][]byte
}

// Result answers a Predict, one Output per input.
type Result struct {
	ID      uint64
	Outputs []Output
}

// Output is one item of a Result: the model's output, or an item error when
// Err is non-empty.
type Output struct {
	Data []byte
	Err  string
}

// Ping asks for a Pong with the same nonce.
type Ping struct{ Nonce uint64 }

// Pong answers a Ping.
type Pong struct{ Nonce uint64 }

// Type implements Message.
func (*Hello) Type() byte { return TypeHello }

// Type implements Message.
func (*Predict) Type() byte { return TypePredict }

// Type implements Message.
func (*Result) Type() byte { return TypeResult }

// Type implements Message.
func (*Error) Type() byte { return TypeError }

// Type implements Message.
func (*Ping) Type() byte { return TypePing }

// Type implements Message.
func (*Pong) Type() byte { return TypePong }

// AppendFrame appends m's frame (length prefix, type, payload) to dst.
func AppendFrame(dst []byte, m Message) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, m.Type())
	dst = m.appendPayload(dst)
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendStr16(dst []byte, s string) []byte {
	if len(s) > maxStr16 {
		s = s[:maxStr16]
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func (m *Hello) appendPayload(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, m.Version)
	dst = append(dst, byte(m.InputType))
	dst = binary.LittleEndian.AppendUint32(dst, m.MaxBatch)
	dst = binary.LittleEndian.AppendUint32(dst, m.MaxFrame)
	dst = appendStr16(dst, m.Model)
	dst = appendStr16(dst, m.ModelVersion)
	if len(m.AuthNonce) == 0 {
		return dst // no nonce: the payload ends after model_version
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.AuthNonce)))
	return append(dst, m.AuthNonce...)
}

// Sizes of a PREDICT frame, as MaxFrame counts it (type byte and payload):
// PredictBaseLen plus ItemLenPrefix and the bytes of each input.
const (
	PredictBaseLen = 1 + 8 + 8 + 1 + 4 // type, id, deadline, input type, count
	ItemLenPrefix  = 4
)

// FrameLen is m's frame length as MaxFrame counts it.
func (m *Predict) FrameLen() int {
	n := PredictBaseLen
	for _, in := range m.Inputs {
		n += ItemLenPrefix + len(in)
	}
	return n
}

func (m *Predict) appendPayload(dst []byte) []byte {
	dst = slices.Grow(dst, m.FrameLen()-1) // one allocation, not a doubling per input
	dst = binary.LittleEndian.AppendUint64(dst, m.ID)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Deadline))
	dst = append(dst, byte(m.InputType))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(m.Inputs)))
	for _, in := range m.Inputs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(in)))
		dst = append(dst, in...)
	}
	return dst
}

func (m *Result) appendPayload(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, m.ID)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(m.Outputs)))
	for _, o := range m.Outputs {
		data := o.Data
		status := byte(0)
		if o.Err != "" {
			status, data = 1, []byte(o.Err)
		}
		dst = append(dst, status)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
		dst = append(dst, data...)
	}
	return dst
}

func (m *Error) appendPayload(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, m.ID)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(m.Code))
	return appendStr16(dst, m.Message)
}

func (m *Ping) appendPayload(dst []byte) []byte {
	return binary.LittleEndian.AppendUint64(dst, m.Nonce)
}

func (m *Pong) appendPayload(dst []byte) []byte {
	return binary.LittleEndian.AppendUint64(dst, m.Nonce)
}

// FrameReader reads frames from a stream, enforcing a frame size limit.
type FrameReader struct {
	r        io.Reader
	maxFrame int
	hdr      [5]byte
}

// NewFrameReader reads frames of at most maxFrame bytes (DefaultMaxFrame when
// maxFrame <= 0). Wrap r in a bufio.Reader when it is a socket.
func NewFrameReader(r io.Reader, maxFrame int) *FrameReader {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	return &FrameReader{r: r, maxFrame: maxFrame}
}

// Next reads one frame. The payload is freshly allocated, so a decoded message
// may keep slices of it. It returns io.EOF when the stream ends cleanly
// between frames, ErrTruncated when it ends inside one, and an *Error with
// code BadFrame or FrameTooLarge for a length outside 1..maxFrame (without
// reading the payload).
func (fr *FrameReader) Next() (typ byte, payload []byte, err error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:4]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, ErrTruncated
		}
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(fr.hdr[:4])
	if n == 0 {
		return 0, nil, &Error{Code: BadFrame, Message: "frame length 0"}
	}
	if uint64(n) > uint64(fr.maxFrame) {
		return 0, nil, &Error{Code: FrameTooLarge, Message: fmt.Sprintf("frame length %d exceeds limit %d", n, fr.maxFrame)}
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[4:5]); err != nil {
		return 0, nil, truncated(err)
	}
	payload = make([]byte, n-1)
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		return 0, nil, truncated(err)
	}
	return fr.hdr[4], payload, nil
}

func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrTruncated
	}
	return err
}

// ErrTruncated reports a stream that ended inside a frame.
var ErrTruncated = errors.New("rpc: truncated frame")

// Decode parses a frame's payload. Slices in the result (inputs, outputs)
// alias payload. A payload that does not parse yields an *Error with code
// BadRequest (UnknownType for an unknown type), whose ID is the request id
// when the payload held one.
func Decode(typ byte, payload []byte) (Message, error) {
	d := decoder{b: payload}
	switch typ {
	case TypeHello:
		return d.hello()
	case TypePredict:
		return d.predict()
	case TypeResult:
		return d.result()
	case TypeError:
		return d.error()
	case TypePing:
		n := d.u64()
		return &Ping{Nonce: n}, d.end("PING")
	case TypePong:
		n := d.u64()
		return &Pong{Nonce: n}, d.end("PONG")
	case TypeAuth:
		return d.auth()
	}
	return nil, &Error{Code: UnknownType, Message: fmt.Sprintf("unknown message type %d", typ)}
}

// decoder reads fields from a payload; the first short read sets bad and
// every later read returns zero.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || n < 0 || n > len(d.b) { // n < 0: a u32 length on a 32-bit int
		d.bad = true
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) str16() string {
	return string(d.take(int(d.u16())))
}

// end reports a short payload or bytes left after the last field.
func (d *decoder) end(what string) error {
	if d.bad {
		return badRequest(0, "%s payload too short", what)
	}
	if len(d.b) != 0 {
		return badRequest(0, "%s payload has %d bytes after its last field", what, len(d.b))
	}
	return nil
}

func badRequest(id uint64, format string, args ...any) *Error {
	return &Error{ID: id, Code: BadRequest, Message: fmt.Sprintf(format, args...)}
}

func (d *decoder) hello() (Message, error) {
	m := &Hello{Version: d.u16(), InputType: InputType(d.u8()), MaxBatch: d.u32(), MaxFrame: d.u32()}
	m.Model = d.str16()
	m.ModelVersion = d.str16()
	if d.bad {
		return nil, badRequest(0, "HELLO payload too short")
	}
	if len(d.b) > 0 {
		m.AuthNonce = d.take(int(d.u16()))
		if d.bad {
			return nil, badRequest(0, "HELLO auth_nonce overruns the frame")
		}
		if err := checkNonce(m.AuthNonce); err != nil {
			return nil, err
		}
		if len(m.AuthNonce) == 0 {
			m.AuthNonce = nil
		}
	}
	// Bytes after auth_nonce are later minor additions: ignored.
	return m, nil
}

func (d *decoder) predict() (Message, error) {
	id := d.u64()
	m := &Predict{ID: id, Deadline: int64(d.u64()), InputType: InputType(d.u8())}
	count := d.u32()
	if d.bad {
		return nil, badRequest(id, "PREDICT header too short")
	}
	if id == 0 {
		return nil, badRequest(0, "PREDICT request_id must not be 0")
	}
	if !m.InputType.Valid() {
		return nil, badRequest(id, "PREDICT input type %d is not one of 1..5", uint8(m.InputType))
	}
	// Each item needs at least its 4-byte length, which bounds count by the
	// payload before anything is allocated.
	if uint64(count)*4 > uint64(len(d.b)) {
		return nil, badRequest(id, "PREDICT count %d does not fit in %d payload bytes", count, len(d.b))
	}
	if count > MaxBatch {
		return nil, &Error{ID: id, Code: BatchTooLarge, Message: fmt.Sprintf("batch of %d items exceeds the contract's limit of %d", count, MaxBatch)}
	}
	m.Inputs = make([][]byte, count)
	size := m.InputType.ElemSize()
	for i := range m.Inputs {
		n := d.u32()
		m.Inputs[i] = d.take(int(n))
		if d.bad {
			return nil, badRequest(id, "PREDICT item %d overruns the frame", i)
		}
		if int(n)%size != 0 {
			return nil, badRequest(id, "PREDICT item %d: %d bytes is not a whole number of %s elements", i, n, m.InputType)
		}
		if m.InputType == String && !utf8.Valid(m.Inputs[i]) {
			return nil, badRequest(id, "PREDICT item %d is not valid UTF-8", i)
		}
	}
	if len(d.b) != 0 {
		return nil, badRequest(id, "PREDICT payload has %d bytes after its last item", len(d.b))
	}
	return m, nil
}

func (d *decoder) result() (Message, error) {
	id := d.u64()
	count := d.u32()
	if d.bad {
		return nil, badRequest(id, "RESULT header too short")
	}
	if uint64(count)*5 > uint64(len(d.b)) {
		return nil, badRequest(id, "RESULT count %d does not fit in %d payload bytes", count, len(d.b))
	}
	m := &Result{ID: id, Outputs: make([]Output, count)}
	for i := range m.Outputs {
		status := d.u8()
		data := d.take(int(d.u32()))
		if d.bad {
			return nil, badRequest(id, "RESULT item %d overruns the frame", i)
		}
		switch status {
		case 0:
			m.Outputs[i].Data = data
		case 1:
			m.Outputs[i].Err = string(data)
			if m.Outputs[i].Err == "" {
				m.Outputs[i].Err = "item failed"
			}
		default:
			return nil, badRequest(id, "RESULT item %d has status %d (want 0 or 1)", i, status)
		}
	}
	if len(d.b) != 0 {
		return nil, badRequest(id, "RESULT payload has %d bytes after its last item", len(d.b))
	}
	return m, nil
}

func (d *decoder) error() (Message, error) {
	m := &Error{ID: d.u64(), Code: Code(d.u16())}
	m.Message = d.str16()
	return m, d.end("ERROR")
}
