package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echo answers each input with itself; an input "fail" is an item error, an
// input "panic" panics, "slow" first reports on started (when it is set) and
// then waits until release is closed or the request's context ends. Tests
// hold a request in the model this way instead of guessing how long it takes.
type echo struct {
	calls   atomic.Int64
	started chan struct{}
	release chan struct{}
}

// newGate returns an echo whose "slow" inputs wait for the test to close
// release, and whose started channel receives once per slow input.
func newGate() *echo {
	return &echo{started: make(chan struct{}, 16), release: make(chan struct{})}
}

func (e *echo) Predict(ctx context.Context, inputs [][]byte) ([]Output, error) {
	e.calls.Add(1)
	out := make([]Output, len(inputs))
	for i, in := range inputs {
		switch string(in) {
		case "fail":
			return nil, errors.New("cannot handle fail")
		case "panic":
			panic("model bug")
		case "slow":
			if e.started != nil {
				e.started <- struct{}{}
			}
			select {
			case <-e.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		out[i].Data = in
	}
	return out, nil
}

// startServer serves m on a fresh loopback port until the test ends.
func startServer(t *testing.T, m Model, h Hello) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, m, h)
}

func serveOn(t *testing.T, ln net.Listener, m Model, h Hello) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(m, ServerOptions{Hello: h}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func startClient(t *testing.T, addr string) *Client {
	t.Helper()
	c := NewClient(addr, ClientOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	c.Start(context.Background())
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

var bytesHello = Hello{InputType: Bytes, MaxBatch: 8, Model: "echo", ModelVersion: "1"}

func TestClientServerRoundTrip(t *testing.T) {
	for _, it := range []InputType{Bytes, Int32, Float32, Float64, String} {
		t.Run(it.String(), func(t *testing.T) {
			h := bytesHello
			h.InputType = it
			c := startClient(t, startServer(t, &echo{}, h))
			in := [][]byte{AppendFloat64s(nil, []float64{1.5, -2}), {}, AppendFloat64s(nil, []float64{3})}
			if it == String {
				in = [][]byte{[]byte("héllo"), {}, []byte("世界")}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			outs, err := c.Predict(ctx, it, in)
			if err != nil {
				t.Fatal(err)
			}
			for i := range in {
				if !bytes.Equal(outs[i].Data, in[i]) || outs[i].Err != "" {
					t.Errorf("item %d: got %+v, want %x", i, outs[i], in[i])
				}
			}
		})
	}
}

func TestPipelinedAnswersMatchedByID(t *testing.T) {
	m := newGate()
	c := startClient(t, startServer(t, m, bytesHello))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slowDone := make(chan error, 1)
	go func() {
		outs, err := c.Predict(ctx, Bytes, [][]byte{[]byte("slow")})
		if err == nil && string(outs[0].Data) != "slow" {
			err = fmt.Errorf("slow request got %q", outs[0].Data)
		}
		slowDone <- err
	}()
	<-m.started
	// The fast requests overtake the slow one on the same connection.
	for i := 0; i < 20; i++ {
		want := fmt.Sprint("fast", i)
		outs, err := c.Predict(ctx, Bytes, [][]byte{[]byte(want)})
		if err != nil || string(outs[0].Data) != want {
			t.Fatalf("fast %d: %v %q", i, err, outs)
		}
		select {
		case err := <-slowDone:
			t.Fatalf("slow request finished before fast request %d: %v", i, err)
		default:
		}
	}
	close(m.release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
}

func TestServerAnswers(t *testing.T) {
	m := &echo{}
	c := startClient(t, startServer(t, m, bytesHello))
	tests := []struct {
		name     string
		it       InputType
		inputs   []string
		wantCode Code
		wantOut  []Output
		calls    int64 // model calls this request makes
	}{
		{name: "ok", it: Bytes, inputs: []string{"a", "b"}, wantOut: []Output{{Data: []byte("a")}, {Data: []byte("b")}}, calls: 1},
		{name: "empty batch", it: Bytes, inputs: []string{}, wantOut: []Output{}},
		{name: "wrong input type", it: Float32, inputs: []string{"abcd"}, wantCode: WrongInputType},
		{name: "batch over max_batch", it: Bytes, inputs: strings.Split("123456789", ""), wantCode: BatchTooLarge},
		{name: "one item fails: the others answer", it: Bytes, inputs: []string{"a", "fail", "c"},
			wantOut: []Output{{Data: []byte("a")}, {Err: "cannot handle fail"}, {Data: []byte("c")}}, calls: 4},
		{name: "single item fails", it: Bytes, inputs: []string{"fail"}, wantCode: ModelError, calls: 1},
		{name: "panic is an error", it: Bytes, inputs: []string{"panic", "b"},
			wantOut: []Output{{Err: "model panicked: model bug"}, {Data: []byte("b")}}, calls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			in := make([][]byte, len(tt.inputs))
			for i, s := range tt.inputs {
				in[i] = []byte(s)
			}
			before := m.calls.Load()
			outs, err := c.Predict(ctx, tt.it, in)
			if got := m.calls.Load() - before; got != tt.calls {
				t.Errorf("model called %d times, want %d", got, tt.calls)
			}
			if tt.wantCode != 0 {
				if !IsCode(err, tt.wantCode) {
					t.Fatalf("got %v, want code %s", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(normalizeOutputs(outs)) != fmt.Sprint(normalizeOutputs(tt.wantOut)) {
				t.Fatalf("got %q, want %q", outs, tt.wantOut)
			}
		})
	}
	// After all of that the container still serves.
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func normalizeOutputs(o []Output) []string {
	s := make([]string, len(o))
	for i, v := range o {
		s[i] = fmt.Sprintf("%q/%q", v.Data, v.Err)
	}
	return s
}

// rawConn dials addr and reads the HELLO, for speaking to a server by hand.
func rawConn(t *testing.T, addr string) (net.Conn, *FrameReader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	fr := NewFrameReader(bufio.NewReader(nc), 0)
	if typ, _, err := fr.Next(); err != nil || typ != TypeHello {
		t.Fatalf("HELLO: type %d, %v", typ, err)
	}
	return nc, fr
}

func readMsg(t *testing.T, fr *FrameReader) Message {
	t.Helper()
	typ, payload, err := fr.Next()
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	m, err := Decode(typ, payload)
	if err != nil {
		t.Fatalf("decoding answer: %v", err)
	}
	return m
}

func frame(typ byte, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)+1))
	return append(append(b, typ), payload...)
}

func TestServerOnBadFrames(t *testing.T) {
	hello := bytesHello
	hello.MaxFrame = 1024
	addr := startServer(t, &echo{}, hello)
	predictHdr := func(id uint64, it InputType, n uint32) []byte {
		b := binary.LittleEndian.AppendUint64(nil, id)
		b = binary.LittleEndian.AppendUint64(b, 0)
		b = append(b, byte(it))
		return binary.LittleEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name      string
		send      []byte
		wantCode  Code   // 0: no ERROR frame expected
		wantID    uint64 // request id in the ERROR
		wantClose bool
	}{
		{name: "zero length", send: []byte{0, 0, 0, 0}, wantCode: BadFrame, wantClose: true},
		{name: "oversized", send: binary.LittleEndian.AppendUint32(nil, 1025), wantCode: FrameTooLarge, wantClose: true},
		{name: "oversized 4 GiB", send: []byte{0xff, 0xff, 0xff, 0xff}, wantCode: FrameTooLarge, wantClose: true},
		{name: "truncated", send: append(binary.LittleEndian.AppendUint32(nil, 100), 2, 1, 2), wantClose: true},
		{name: "unknown type", send: frame(42, []byte{1, 2, 3}), wantCode: UnknownType},
		{name: "RESULT is unexpected", send: frame(TypeResult, make([]byte, 12)), wantCode: UnknownType},
		{name: "short predict", send: frame(TypePredict, []byte{1, 2, 3}), wantCode: BadRequest},
		{name: "item overruns", send: frame(TypePredict, binary.LittleEndian.AppendUint32(predictHdr(7, Bytes, 1), 50)), wantCode: BadRequest, wantID: 7},
		{name: "count beyond payload", send: frame(TypePredict, predictHdr(8, Bytes, 1<<30)), wantCode: BadRequest, wantID: 8},
		{name: "bad input type", send: frame(TypePredict, predictHdr(9, 9, 0)), wantCode: BadRequest, wantID: 9},
		{name: "float32 not whole", send: frame(TypePredict, append(binary.LittleEndian.AppendUint32(predictHdr(10, Float32, 1), 3), 1, 2, 3)), wantCode: BadRequest, wantID: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, fr := rawConn(t, addr)
			if _, err := nc.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.name == "truncated" {
				nc.(*net.TCPConn).CloseWrite()
			}
			if tt.wantCode != 0 {
				e, ok := readMsg(t, fr).(*Error)
				if !ok || e.Code != tt.wantCode || e.ID != tt.wantID {
					t.Fatalf("got %v, want ERROR %s id %d", e, tt.wantCode, tt.wantID)
				}
			}
			if tt.wantClose {
				if _, _, err := fr.Next(); !errors.Is(err, io.EOF) {
					t.Fatalf("after the bad frame: %v, want the server to close", err)
				}
				return
			}
			// The connection still serves.
			if _, err := nc.Write(AppendFrame(nil, &Ping{Nonce: 99})); err != nil {
				t.Fatal(err)
			}
			if p, ok := readMsg(t, fr).(*Pong); !ok || p.Nonce != 99 {
				t.Fatalf("got %v, want PONG 99", p)
			}
		})
	}
}

func TestExpiredRequestNotComputed(t *testing.T) {
	m := &echo{}
	nc, fr := rawConn(t, startServer(t, m, bytesHello))
	p := &Predict{ID: 5, Deadline: time.Now().Add(-time.Millisecond).UnixNano(), InputType: Bytes, Inputs: [][]byte{[]byte("a")}}
	if _, err := nc.Write(AppendFrame(nil, p)); err != nil {
		t.Fatal(err)
	}
	if e, ok := readMsg(t, fr).(*Error); !ok || e.Code != DeadlineExceeded || e.ID != 5 {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED for request 5", e)
	}
	if n := m.calls.Load(); n != 0 {
		t.Fatalf("model called %d times for an expired request", n)
	}
	// The client does not even send an expired request.
	c := startClient(t, nc.RemoteAddr().String())
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	if _, err := c.Predict(ctx, Bytes, [][]byte{[]byte("a")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client: %v, want context.DeadlineExceeded", err)
	}
	if n := m.calls.Load(); n != 0 {
		t.Fatalf("model called %d times for an expired request", n)
	}
}

func TestPingAnsweredWhileComputing(t *testing.T) {
	m := newGate()
	c := startClient(t, startServer(t, m, bytesHello))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Predict(ctx, Bytes, [][]byte{[]byte("slow")})
	}()
	<-m.started
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("PONG came only after the slow batch finished")
	default:
	}
	close(m.release)
	<-done
}

func TestClientReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	m := newGate()
	go func() { served <- NewServer(m, ServerOptions{Hello: bytesHello}).Serve(ctx, ln) }()
	c := startClient(t, addr)

	// A request in flight when the container goes away fails with
	// ErrConnLost; later ones with ErrNotConnected, without waiting.
	inflight := make(chan error, 1)
	go func() {
		_, err := c.Predict(context.Background(), Bytes, [][]byte{[]byte("slow")})
		inflight <- err
	}()
	<-m.started
	stopServer()
	<-served
	if err := <-inflight; !errors.Is(err, ErrConnLost) {
		t.Fatalf("in-flight request: %v, want ErrConnLost", err)
	}
	// The read loop fails the calls in flight, then clears the connection.
	for deadline := time.Now().Add(5 * time.Second); c.Connected(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client still reports a connection 5 s after it was lost")
		}
	}
	if _, err := c.Predict(context.Background(), Bytes, [][]byte{[]byte("x")}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("while down: %v, want ErrNotConnected", err)
	}

	// The container comes back on the same address: the client finds it.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln2, &echo{}, bytesHello)
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	outs, err := c.Predict(wctx, Bytes, [][]byte{[]byte("back")})
	if err != nil || string(outs[0].Data) != "back" {
		t.Fatalf("after reconnect: %v %q", err, outs)
	}
}

func TestClientDeadlineBoundsTheWait(t *testing.T) {
	c := startClient(t, startServer(t, &echo{}, bytesHello))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := c.Predict(ctx, Bytes, [][]byte{[]byte("slow")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}

func TestClientRefusesBadHello(t *testing.T) {
	tests := []struct {
		name  string
		hello []byte
	}{
		{"wrong version", AppendFrame(nil, &Hello{Version: 2, InputType: Bytes})},
		{"bad input type", AppendFrame(nil, &Hello{Version: 1, InputType: 9})},
		{"not a HELLO", AppendFrame(nil, &Ping{Nonce: 1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan struct{})
			go func() {
				defer close(accepted)
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				defer nc.Close()
				nc.Write(tt.hello)
				io.Copy(io.Discard, nc) // until the client hangs up
			}()
			c := NewClient(ln.Addr().String(), ClientOptions{MinBackoff: time.Hour})
			c.Start(context.Background())
			<-accepted
			if c.Connected() {
				t.Fatal("client accepted a bad HELLO")
			}
			c.Close()
		})
	}
}

// TestClientRefusesWhatTheContainerWould: a batch over the HELLO's max
// batch or a frame over its max frame is refused before sending, so the
// connection, which the container would close, stays up.
func TestClientRefusesWhatTheContainerWould(t *testing.T) {
	h := bytesHello
	h.MaxFrame = 1024
	m := &echo{}
	c := startClient(t, startServer(t, m, h))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		name   string
		inputs [][]byte
		code   Code
	}{
		{"batch over max_batch", make([][]byte, 9), BatchTooLarge},
		{"frame over max_frame", [][]byte{make([]byte, 1024)}, FrameTooLarge},
	}
	for _, tt := range tests {
		_, err := c.Predict(ctx, Bytes, tt.inputs)
		if !IsCode(err, tt.code) {
			t.Errorf("%s: %v, want code %v", tt.name, err, tt.code)
		}
	}
	if n := m.calls.Load(); n != 0 {
		t.Errorf("the container computed %d requests, want none", n)
	}
	// The largest frame that fits: 1024 = 22 + 4 + 998.
	outs, err := c.Predict(ctx, Bytes, [][]byte{make([]byte, 1024-PredictBaseLen-ItemLenPrefix)})
	if err != nil || len(outs) != 1 || !c.Connected() {
		t.Fatalf("after the refusals: %v (connected %v), want an answer on the same connection", err, c.Connected())
	}
}
