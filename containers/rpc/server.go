package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Model is what a Go model container implements.
type Model interface {
	// Predict computes one output per input. ctx carries the request's
	// deadline. A returned error fails the whole request; the server then
	// retries the items one by one so that good items still get outputs.
	// Per-item failures go in Output.Err.
	Predict(ctx context.Context, inputs [][]byte) ([]Output, error)
}

// ModelFunc adapts a function to Model.
type ModelFunc func(ctx context.Context, inputs [][]byte) ([]Output, error)

// Predict implements Model.
func (f ModelFunc) Predict(ctx context.Context, inputs [][]byte) ([]Output, error) {
	return f(ctx, inputs)
}

// ServerOptions configure a Server. The zero value of each field has the
// meaning its comment gives.
type ServerOptions struct {
	// Hello is sent on every connection. Version 0 means this package's
	// Version; MaxFrame 0 means DefaultMaxFrame.
	Hello Hello
	// MaxInFlight bounds the requests one connection computes at once;
	// further PREDICTs wait in the socket (backpressure). 0 means 4.
	MaxInFlight int
	// Secret, when set, makes every connection authenticate before it is
	// served: the HELLO carries a fresh nonce, and a peer whose first
	// frame is not an AUTH with the right MAC gets an UNAUTHENTICATED
	// ERROR, a warning in the log, and a closed connection. Nil means no
	// authentication (SecretFromEnv reads the one the runtimes give).
	Secret []byte
	// AuthTimeout bounds the wait for a peer's AUTH frame. 0 means 10 s.
	AuthTimeout time.Duration
	// Logger receives connection-level problems. nil means no logs.
	Logger *zap.Logger
	// Now is the clock used for deadline checks. nil means time.Now.
	Now func() time.Time
}

// Server serves a Model over the RPC contract.
type Server struct {
	model Model
	opts  ServerOptions
	hello []byte // the encoded HELLO frame

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

// NewServer returns a server for m; call Serve to accept connections.
func NewServer(m Model, opts ServerOptions) *Server {
	if opts.Hello.Version == 0 {
		opts.Hello.Version = Version
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 4
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{model: m, opts: opts, hello: AppendFrame(nil, &opts.Hello), conns: map[net.Conn]struct{}{}}
}

func (s *Server) maxFrame() int {
	if s.opts.Hello.MaxFrame == 0 {
		return DefaultMaxFrame
	}
	return int(s.opts.Hello.MaxFrame)
}

// Serve accepts connections on ln until ctx is done, then closes ln and every
// connection and waits for their goroutines. It returns nil after a shutdown
// through ctx, else the accept error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			break
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			break
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// writeTimeout bounds one frame's write to a peer.
const writeTimeout = 30 * time.Second

// serverConn is one accepted connection.
type serverConn struct {
	s   *Server
	c   net.Conn
	wmu sync.Mutex // guards writes to c and buf
	buf []byte
}

func (sc *serverConn) write(m Message) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	sc.buf = AppendFrame(sc.buf[:0], m)
	// A peer that stops reading must not hold this goroutine forever.
	_ = sc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := sc.c.Write(sc.buf)
	return err
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	log := s.opts.Logger.With(zap.Stringer("peer", c.RemoteAddr()))
	sc := &serverConn{s: s, c: c}
	hello := s.hello
	var nonce []byte
	if s.opts.Secret != nil {
		nonce = newNonce()
		h := s.opts.Hello
		h.AuthNonce = nonce
		hello = AppendFrame(nil, &h)
	}
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(hello); err != nil {
		return
	}
	fr := NewFrameReader(bufio.NewReaderSize(c, 64<<10), s.maxFrame())
	if nonce != nil {
		if err := s.authenticate(fr, c, nonce); err != nil {
			log.Warn("refused a peer that did not authenticate", zap.Error(err))
			_ = sc.write(err)
			return
		}
	}
	slots := make(chan struct{}, s.opts.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	// The requests' models run until their own deadline or until this
	// connection ends (its answer could no longer be sent), not until the
	// server's ctx ends: a shutdown closes the connection first, and the
	// answer is dropped rather than reported as expired.
	connCtx, endConn := context.WithCancel(context.WithoutCancel(ctx))
	defer endConn() // before wg.Wait

	for {
		typ, payload, err := fr.Next()
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				// Bad length: say why, then close (docs/rpc.md).
				log.Warn("closing connection", zap.Error(err))
				_ = sc.write(e)
			} else if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				log.Debug("connection ended", zap.Error(err))
			}
			return
		}
		if typ != TypePredict && typ != TypePing {
			if sc.write(&Error{Code: UnknownType, Message: fmt.Sprintf("unexpected message type %d", typ)}) != nil {
				return
			}
			continue
		}
		msg, err := Decode(typ, payload)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Code: BadRequest, Message: err.Error()}
			}
			if sc.write(e) != nil {
				return
			}
			continue
		}
		switch m := msg.(type) {
		case *Ping:
			if sc.write(&Pong{Nonce: m.Nonce}) != nil {
				return
			}
		case *Predict:
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				if sc.write(s.handle(connCtx, m)) != nil {
					c.Close()
				}
			}()
		}
	}
}

// authenticate reads the peer's first frame, which must be an AUTH that
// answers nonce; the error is the ERROR frame to send it otherwise.
func (s *Server) authenticate(fr *FrameReader, c net.Conn, nonce []byte) *Error {
	_ = c.SetReadDeadline(time.Now().Add(s.opts.AuthTimeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	typ, payload, err := fr.Next()
	if err != nil {
		return unauthenticated(fmt.Sprintf("no AUTH frame: %v", err))
	}
	if typ != TypeAuth {
		return unauthenticated(fmt.Sprintf("the first frame has type %d, want AUTH", typ))
	}
	msg, err := Decode(typ, payload)
	if err != nil {
		return unauthenticated(err.Error())
	}
	if !validAuth(msg.(*Auth), s.opts.Secret, nonce) {
		return unauthenticated("wrong MAC (the peer has another secret)")
	}
	return nil
}

// handle answers one PREDICT.
func (s *Server) handle(ctx context.Context, p *Predict) Message {
	h := &s.opts.Hello
	switch {
	case p.InputType != h.InputType:
		return &Error{ID: p.ID, Code: WrongInputType, Message: fmt.Sprintf("model takes %s, request has %s", h.InputType, p.InputType)}
	case h.MaxBatch > 0 && len(p.Inputs) > int(h.MaxBatch):
		return &Error{ID: p.ID, Code: BatchTooLarge, Message: fmt.Sprintf("batch of %d items exceeds max_batch %d", len(p.Inputs), h.MaxBatch)}
	}
	if p.Deadline != 0 {
		deadline := time.Unix(0, p.Deadline)
		if !s.opts.Now().Before(deadline) {
			return &Error{ID: p.ID, Code: DeadlineExceeded, Message: "deadline passed before compute"}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	if len(p.Inputs) == 0 {
		return &Result{ID: p.ID}
	}
	outs, err := s.predict(ctx, p.Inputs)
	if err != nil && len(p.Inputs) > 1 && !expired(ctx, err) {
		outs, err = make([]Output, len(p.Inputs)), nil
		for i := range p.Inputs {
			one, ierr := s.predict(ctx, p.Inputs[i:i+1])
			if ierr != nil {
				outs[i].Err = ierr.Error()
			} else {
				outs[i] = one[0]
			}
		}
	}
	if err != nil {
		if expired(ctx, err) {
			return &Error{ID: p.ID, Code: DeadlineExceeded, Message: err.Error()}
		}
		return &Error{ID: p.ID, Code: ModelError, Message: err.Error()}
	}
	return &Result{ID: p.ID, Outputs: outs}
}

// expired reports whether err means the request's deadline passed: the
// model said so, or gave up because ctx expired.
func expired(ctx context.Context, err error) bool {
	return IsCode(err, DeadlineExceeded) || (ctx.Err() != nil && errors.Is(err, ctx.Err()))
}

// predict calls the model, turning a panic or a wrong output count into an
// error.
func (s *Server) predict(ctx context.Context, inputs [][]byte) (outs []Output, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Error("model panicked", zap.Any("panic", r))
			outs, err = nil, fmt.Errorf("model panicked: %v", r)
		}
	}()
	outs, err = s.model.Predict(ctx, inputs)
	if err == nil && len(outs) != len(inputs) {
		return nil, fmt.Errorf("model returned %d outputs for %d inputs", len(outs), len(inputs))
	}
	return outs, err
}

// ListenAddr is the address a container listens on: flagValue when set, else
// $SLOPROXY_RPC_ADDR, else 0.0.0.0:7000.
func ListenAddr(flagValue string) string {
	return firstNonEmpty(flagValue, os.Getenv("SLOPROXY_RPC_ADDR"), "0.0.0.0:7000")
}

// ModelName is flagValue when set, else $SLOPROXY_MODEL_NAME, else def.
func ModelName(flagValue, def string) string {
	return firstNonEmpty(flagValue, os.Getenv("SLOPROXY_MODEL_NAME"), def)
}

// ModelVersion is flagValue when set, else $SLOPROXY_MODEL_VERSION, else "1".
func ModelVersion(flagValue string) string {
	return firstNonEmpty(flagValue, os.Getenv("SLOPROXY_MODEL_VERSION"), "1")
}

// ModelPath is flagValue when set, else $SLOPROXY_MODEL_PATH, else def: the
// model file or directory a container loads.
func ModelPath(flagValue, def string) string {
	return firstNonEmpty(flagValue, os.Getenv("SLOPROXY_MODEL_PATH"), def)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
