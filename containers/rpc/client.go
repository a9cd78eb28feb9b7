package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ClientOptions configure a Client. The zero value of each field has the
// meaning its comment gives.
type ClientOptions struct {
	// DialTimeout bounds one connection attempt. 0 means 2 s.
	DialTimeout time.Duration
	// HelloTimeout bounds the wait for the container's HELLO. 0 means 5 s.
	HelloTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles after each failure. 0 means 50 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// MaxFrame is the largest frame accepted from the container. 0 means
	// DefaultMaxFrame.
	MaxFrame int
	// Secret is the container's secret (see ServerOptions.Secret). When
	// set, the client answers the HELLO's nonce with an AUTH frame and
	// confirms with a PING that the container accepted it, and it refuses
	// a container that does not ask to authenticate (ErrUnexpectedAuth).
	// Nil means the client does not authenticate, and fails to connect to
	// a container that asks it to.
	Secret []byte
	// Logger receives connection events. nil means no logs.
	Logger *zap.Logger
}

func (o *ClientOptions) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DialTimeout, 2*time.Second)
	def(&o.HelloTimeout, 5*time.Second)
	def(&o.MinBackoff, 50*time.Millisecond)
	def(&o.MaxBackoff, 5*time.Second)
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Client is the proxy's side of the contract for one container address. It
// keeps one persistent connection, pipelines requests over it (answers are
// matched by request id, so a slow batch does not hold up a fast one), and
// reconnects with exponential backoff when the connection drops. Requests
// never wait for a reconnection: while disconnected they fail at once with
// ErrNotConnected, so a caller can send them to another replica.
type Client struct {
	addr string
	opts ClientOptions

	mu    sync.Mutex    // guards conn, hello, ready and last
	conn  *clientConn   // nil while disconnected
	hello Hello         // the current connection's HELLO
	ready chan struct{} // closed while connected; replaced on disconnect
	last  error         // why the last connection failed; nil once connected

	cancel  context.CancelFunc
	stopped chan struct{}
}

// NewClient returns a client for addr. It connects once Start is called.
func NewClient(addr string, opts ClientOptions) *Client {
	opts.setDefaults()
	return &Client{addr: addr, opts: opts, ready: make(chan struct{})}
}

// Addr is the container's address.
func (c *Client) Addr() string { return c.addr }

// Start connects in the background and keeps reconnecting until ctx is done
// or Close is called.
func (c *Client) Start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	c.stopped = make(chan struct{})
	go c.run(ctx)
}

// Close stops reconnecting, closes the connection (failing requests in flight
// with ErrConnLost) and waits for the client's goroutines.
func (c *Client) Close() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	<-c.stopped
	return nil
}

// Connected reports whether the client has an open connection.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// Hello returns the current connection's HELLO, and false while
// disconnected.
func (c *Client) Hello() (Hello, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello, c.conn != nil
}

// WaitReady waits until the client is connected and returns the container's
// HELLO. When ctx ends first, its error wraps ctx's and the last connection
// attempt's failure, such as an UNAUTHENTICATED *Error.
func (c *Client) WaitReady(ctx context.Context) (Hello, error) {
	for {
		c.mu.Lock()
		ready, hello, ok := c.ready, c.hello, c.conn != nil
		c.mu.Unlock()
		if ok {
			return hello, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			c.mu.Lock()
			last := c.last
			c.mu.Unlock()
			if last != nil {
				return Hello{}, fmt.Errorf("waiting for %s: %w; the last attempt: %w", c.addr, ctx.Err(), last)
			}
			return Hello{}, fmt.Errorf("waiting for %s: %w", c.addr, ctx.Err())
		case <-c.stopped:
			return Hello{}, ErrClosed
		}
	}
}

func (c *Client) run(ctx context.Context) {
	defer close(c.stopped)
	backoff := c.opts.MinBackoff
	fails := 0 // in a row; only the first is logged above debug level
	for {
		cc, hello, err := c.dial(ctx)
		if err == nil {
			fails = 0
			began := time.Now()
			c.setConn(cc, hello)
			stop := context.AfterFunc(ctx, func() { cc.close(ErrConnLost) })
			err = cc.readLoop()
			stop()
			c.clearConn(cc, err)
			if time.Since(began) > c.opts.MaxBackoff {
				backoff = c.opts.MinBackoff
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.last = err
		c.mu.Unlock()
		log := c.opts.Logger.Warn
		if fails++; fails > 1 {
			log = c.opts.Logger.Debug
		}
		log("model container connection failed; retrying with backoff",
			zap.String("addr", c.addr), zap.Error(err), zap.Duration("retry_in", backoff), zap.Int("failures_in_a_row", fails))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// dial connects and reads the HELLO.
func (c *Client) dial(ctx context.Context) (*clientConn, Hello, error) {
	d := net.Dialer{Timeout: c.opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, Hello{}, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(c.opts.HelloTimeout))
	br := bufio.NewReaderSize(nc, 64<<10)
	fr := NewFrameReader(br, c.opts.MaxFrame)
	typ, payload, err := fr.Next()
	if err == nil && typ != TypeHello {
		err = fmt.Errorf("first frame has type %d, want HELLO", typ)
	}
	var msg Message
	if err == nil {
		msg, err = Decode(typ, payload)
	}
	if err != nil {
		nc.Close()
		return nil, Hello{}, fmt.Errorf("reading HELLO: %w", err)
	}
	h := *msg.(*Hello)
	if h.Version != Version {
		nc.Close()
		return nil, Hello{}, fmt.Errorf("container speaks contract version %d, want %d", h.Version, Version)
	}
	if !h.InputType.Valid() {
		nc.Close()
		return nil, Hello{}, fmt.Errorf("container announced invalid input type %d", uint8(h.InputType))
	}
	if err := c.authenticate(nc, fr, h.AuthNonce); err != nil {
		nc.Close()
		return nil, Hello{}, err
	}
	_ = nc.SetReadDeadline(time.Time{})
	return &clientConn{nc: nc, fr: fr, hello: h, pending: map[uint64]*call{}}, h, nil
}

// authenticate answers a HELLO's nonce with an AUTH and a PING, and waits
// for the PONG: the container's word that it accepted the AUTH. A container
// that refuses it answers an UNAUTHENTICATED *Error, returned wrapped.
func (c *Client) authenticate(nc net.Conn, fr *FrameReader, nonce []byte) error {
	switch {
	case len(nonce) == 0 && c.opts.Secret == nil:
		return nil
	case len(nonce) == 0:
		return ErrUnexpectedAuth
	case c.opts.Secret == nil:
		return fmt.Errorf("authenticating: %w", &Error{Code: Unauthenticated, Message: "the container asks to authenticate; the client has no secret for it"})
	}
	buf := AppendFrame(nil, &Auth{MAC: AuthMAC(c.opts.Secret, nonce)})
	buf = AppendFrame(buf, &Ping{})
	_ = nc.SetWriteDeadline(time.Now().Add(c.opts.HelloTimeout))
	if _, err := nc.Write(buf); err != nil {
		return fmt.Errorf("authenticating: %w", err)
	}
	typ, payload, err := fr.Next()
	var msg Message
	if err == nil {
		msg, err = Decode(typ, payload)
	}
	if err != nil {
		return fmt.Errorf("authenticating: %w", err)
	}
	switch m := msg.(type) {
	case *Pong:
		return nil
	case *Error:
		return fmt.Errorf("authenticating: %w", m)
	}
	return fmt.Errorf("authenticating: the container answered with message type %d, want PONG", typ)
}

func (c *Client) setConn(cc *clientConn, h Hello) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.hello, c.last = cc, h, nil
	close(c.ready)
}

func (c *Client) clearConn(cc *clientConn, err error) {
	cc.close(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == cc {
		c.conn = nil
		c.ready = make(chan struct{})
	}
}

// current returns the open connection; ErrClosed after Close,
// ErrNotConnected while disconnected.
func (c *Client) current() (*clientConn, error) {
	c.mu.Lock()
	cc := c.conn
	c.mu.Unlock()
	if cc != nil {
		return cc, nil
	}
	select {
	case <-c.stopped:
		return nil, ErrClosed
	default:
		return nil, ErrNotConnected
	}
}

// Predict sends one batch and waits for its answer. The deadline of ctx, if
// any, travels in the frame and bounds the wait. It returns the per-item
// outputs; an *Error when the container answered with an ERROR frame;
// ErrNotConnected when nothing was sent; ErrConnLost when the connection
// broke before the answer; or ctx's error.
func (c *Client) Predict(ctx context.Context, it InputType, inputs [][]byte) ([]Output, error) {
	cc, err := c.current()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // an expired request never reaches the model
	}
	var deadline int64
	if d, ok := ctx.Deadline(); ok {
		deadline = d.UnixNano()
	}
	p := Predict{Deadline: deadline, InputType: it, Inputs: inputs}
	// What the container would refuse, and close the connection over,
	// is refused here: the connection stays up for the other requests.
	if h := cc.hello; h.MaxBatch > 0 && len(inputs) > int(h.MaxBatch) {
		return nil, &Error{Code: BatchTooLarge, Message: fmt.Sprintf("%d inputs; the container takes at most %d", len(inputs), h.MaxBatch)}
	}
	if n := p.FrameLen(); n > cc.maxFrame() {
		return nil, &Error{Code: FrameTooLarge, Message: fmt.Sprintf("a frame of %d bytes; the container takes at most %d", n, cc.maxFrame())}
	}
	reply, err := cc.roundTrip(ctx, &p, &p.ID, len(inputs))
	if err != nil {
		return nil, err
	}
	return reply.(*Result).Outputs, nil
}

// WarmUp sends one input of zeros (one element of a numeric type) and
// waits for the answer: what a runtime asks of a replica before it serves.
// The model's opinion of zeros does not matter: an item error, or an ERROR
// frame saying the model failed on that input (MODEL_ERROR, BAD_REQUEST),
// shows the container up and its model run, and returns nil.
func (c *Client) WarmUp(ctx context.Context, it InputType) error {
	_, err := c.Predict(ctx, it, [][]byte{make([]byte, max(it.ElemSize(), 1))})
	if IsCode(err, ModelError) || IsCode(err, BadRequest) {
		return nil
	}
	return err
}

// Ping sends a PING and waits for the PONG.
func (c *Client) Ping(ctx context.Context) error {
	cc, err := c.current()
	if err != nil {
		return err
	}
	p := Ping{}
	_, err = cc.roundTrip(ctx, &p, &p.Nonce, -1)
	return err
}

// clientConn is one open connection and its requests in flight.
type clientConn struct {
	nc     net.Conn
	fr     *FrameReader
	hello  Hello // the container's, read once at connect
	nextID atomic.Uint64

	wmu  sync.Mutex // guards writes to nc and wbuf
	wbuf []byte

	mu      sync.Mutex // guards pending and err
	pending map[uint64]*call
	err     error // set once the connection is closed
}

// call is one request waiting for its answer.
type call struct {
	n     int // items expected in the RESULT; -1 for a PING
	reply chan Message
}

// roundTrip registers m under a fresh id (written through idField), sends it
// and waits for the matching answer.
func (cc *clientConn) roundTrip(ctx context.Context, m Message, idField *uint64, n int) (Message, error) {
	id := cc.nextID.Add(1)
	*idField = id
	cl := &call{n: n, reply: make(chan Message, 1)}
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return nil, ErrNotConnected
	}
	cc.pending[id] = cl
	cc.mu.Unlock()

	if written, err := cc.write(ctx, m); err != nil {
		cc.forget(id)
		if written {
			// A frame cut short leaves the stream unusable.
			cc.close(fmt.Errorf("writing a frame: %w", err))
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, cc.lost()
	}
	select {
	case r := <-cl.reply:
		if r == nil {
			return nil, cc.lost()
		}
		if e, ok := r.(*Error); ok {
			return nil, e
		}
		return r, nil
	case <-ctx.Done():
		cc.forget(id)
		return nil, ctx.Err()
	}
}

// write sends m's frame; written reports whether any of it reached the
// connection, after which a failure leaves the stream unusable. A request
// whose ctx ended while it waited for its turn is not sent.
func (cc *clientConn) write(ctx context.Context, m Message) (written bool, err error) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	deadline := time.Now().Add(writeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = cc.nc.SetWriteDeadline(deadline)
	cc.wbuf = AppendFrame(cc.wbuf[:0], m)
	n, err := cc.nc.Write(cc.wbuf)
	if cap(cc.wbuf) > 1<<20 {
		cc.wbuf = nil // do not pin a large buffer after a large batch
	}
	return n > 0, err
}

// maxFrame is the largest frame the container takes.
func (cc *clientConn) maxFrame() int {
	if cc.hello.MaxFrame == 0 {
		return DefaultMaxFrame
	}
	return int(cc.hello.MaxFrame)
}

// lost is ErrConnLost with why the connection closed.
func (cc *clientConn) lost() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err == nil || errors.Is(cc.err, ErrConnLost) {
		return ErrConnLost
	}
	return fmt.Errorf("%w: %v", ErrConnLost, cc.err)
}

func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	delete(cc.pending, id)
	cc.mu.Unlock()
}

// close closes the connection once and fails every request in flight.
func (cc *clientConn) close(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	pending := cc.pending
	cc.pending = nil
	cc.mu.Unlock()
	cc.nc.Close()
	for _, cl := range pending {
		cl.reply <- nil
	}
}

// readLoop delivers answers until the connection fails; it returns why.
func (cc *clientConn) readLoop() error {
	for {
		typ, payload, err := cc.fr.Next()
		if err != nil {
			return err
		}
		msg, err := Decode(typ, payload)
		if err != nil {
			return fmt.Errorf("container sent a bad frame: %w", err)
		}
		var id uint64
		switch m := msg.(type) {
		case *Result:
			id = m.ID
		case *Error:
			if m.ID == 0 {
				return fmt.Errorf("container reported: %w", m)
			}
			id = m.ID
		case *Pong:
			id = m.Nonce
		default:
			return fmt.Errorf("container sent unexpected message type %d", typ)
		}
		cc.mu.Lock()
		cl := cc.pending[id]
		delete(cc.pending, id)
		cc.mu.Unlock()
		if cl == nil {
			continue // its caller gave up
		}
		if err := mismatch(msg, cl.n); err != nil {
			cl.reply <- nil
			return err
		}
		cl.reply <- msg
	}
}

// mismatch reports an answer that does not fit its request: a PONG for a
// PREDICT or the reverse, or a RESULT with the wrong item count.
func mismatch(msg Message, n int) error {
	switch m := msg.(type) {
	case *Pong:
		if n >= 0 {
			return errors.New("container answered a PREDICT with a PONG")
		}
	case *Result:
		if n < 0 {
			return errors.New("container answered a PING with a RESULT")
		}
		if len(m.Outputs) != n {
			return fmt.Errorf("container answered %d inputs with %d outputs", n, len(m.Outputs))
		}
	}
	return nil
}
