"""The sloproxy model-container RPC contract (docs/rpc.md), standard library only.

A model supplies one function, predict(inputs) -> outputs, and calls serve():

    import sloproxy_rpc
    sloproxy_rpc.serve(lambda xs: [sum(x) for x in xs], "float64")

Inputs are an array.array per item for int32/float32/float64 (typecodes 'i',
'f', 'd'), str for string, bytes for bytes. Outputs, one per input: bytes and
str are sent as they are, an Exception instance is an item error, anything
else is sent as compact JSON (objects with .tolist(), such as numpy values,
are converted).
"""
import array
import collections
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

VERSION = 1
HELLO, PREDICT, RESULT, ERROR, PING, PONG, AUTH = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {1: "HELLO", 2: "PREDICT", 3: "RESULT", 4: "ERROR", 5: "PING", 6: "PONG", 7: "AUTH"}
INPUT_TYPES = {"bytes": 1, "int32": 2, "float32": 3, "float64": 4, "string": 5}
INPUT_TYPE_NAMES = {code: name for name, code in INPUT_TYPES.items()}
BYTES, INT32, FLOAT32, FLOAT64, STRING = 1, 2, 3, 4, 5
TYPECODES = {INT32: "i", FLOAT32: "f", FLOAT64: "d"}
DEFAULT_MAX_FRAME = 64 << 20
MAX_BATCH = 65536
(BAD_FRAME, UNKNOWN_TYPE, BAD_REQUEST, WRONG_INPUT_TYPE, BATCH_TOO_LARGE, FRAME_TOO_LARGE,
 DEADLINE_EXCEEDED, MODEL_ERROR, UNSUPPORTED_VERSION, OVERLOADED, UNAUTHENTICATED) = range(1, 12)
CODE_NAMES = dict(enumerate("BAD_FRAME UNKNOWN_TYPE BAD_REQUEST WRONG_INPUT_TYPE BATCH_TOO_LARGE FRAME_TOO_LARGE "
                            "DEADLINE_EXCEEDED MODEL_ERROR UNSUPPORTED_VERSION OVERLOADED UNAUTHENTICATED".split(), 1))
AUTH_NONCE_LEN, AUTH_MAC_LEN = 32, 32
AUTH_CONTEXT = b"sloproxy-rpc-auth-v1\x00"  # prefixes the nonce under the MAC
AUTH_TIMEOUT_S = 10  # bounds the wait for a peer's AUTH, as the Go server's AuthTimeout
assert all(array.array(c).itemsize == s for c, s in (("i", 4), ("f", 4), ("d", 8)))
ITEM_SIZES = {INT32: 4, FLOAT32: 4, FLOAT64: 8}  # bytes per element of a numeric item
WRITE_TIMEOUT_S = 30  # bounds one send to a peer, as the Go server's writeTimeout

# auth_nonce: empty, or the nonce a peer must answer with an AUTH (see auth_mac).
Hello = collections.namedtuple("Hello", "version input_type max_batch max_frame model_name model_version auth_nonce",
                               defaults=(b"",))
Predict = collections.namedtuple("Predict", "request_id deadline input_type inputs")  # inputs: bytes
Result = collections.namedtuple("Result", "request_id outputs")  # outputs: bytes or ItemError
Ping = collections.namedtuple("Ping", "nonce")
Pong = collections.namedtuple("Pong", "nonce")
Auth = collections.namedtuple("Auth", "mac")  # mac: 32 bytes


def auth_mac(secret, nonce):
    """The MAC of an AUTH that answers nonce under secret (bytes): HMAC-SHA256."""
    return hmac.new(secret, AUTH_CONTEXT + nonce, hashlib.sha256).digest()


class _Equal:
    def __eq__(self, other):
        return type(other) is type(self) and self.args == other.args

    __hash__ = Exception.__hash__


class RPCError(_Equal, Exception):
    """An ERROR message; also raised by decode() for input that does not parse."""

    def __init__(self, code, message, request_id=0):
        super().__init__(code, message, request_id)
        self.code, self.message, self.request_id = code, message, request_id

    def __str__(self):
        return "%s: %s" % (CODE_NAMES.get(self.code, "CODE_%d" % self.code), self.message)


class ItemError(_Equal, Exception):
    """One failed item of a RESULT; args[0] is the message."""


class Truncated(Exception):
    """The stream ended inside a frame."""


def to_json(value):
    """Compact JSON text of value; numpy arrays and scalars become lists and numbers."""
    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError("%s is not JSON serializable" % type(o).__name__)
    return json.dumps(value, separators=(",", ":"), default=default)


def _str16(s):
    b = s.encode("utf-8")[:65535].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("<H", len(b)) + b


def encode(m):
    """The frame (length prefix, type byte, payload) of message m."""
    if isinstance(m, Hello):
        t, p = HELLO, struct.pack("<HBII", *m[:4]) + _str16(m.model_name) + _str16(m.model_version)
        if m.auth_nonce:
            p += struct.pack("<H", len(m.auth_nonce)) + m.auth_nonce
    elif isinstance(m, Auth):
        t, p = AUTH, bytes(m.mac)
    elif isinstance(m, Predict):
        parts = [struct.pack("<QqBI", m.request_id, m.deadline, m.input_type, len(m.inputs))]
        for x in m.inputs:
            parts += [struct.pack("<I", len(x)), x]
        t, p = PREDICT, b"".join(parts)
    elif isinstance(m, Result):
        parts = [struct.pack("<QI", m.request_id, len(m.outputs))]
        for o in m.outputs:
            status, data = (1, str(o.args[0]).encode("utf-8")) if isinstance(o, ItemError) else (0, o)
            parts += [struct.pack("<BI", status, len(data)), data]
        t, p = RESULT, b"".join(parts)
    elif isinstance(m, RPCError):
        t, p = ERROR, struct.pack("<QH", m.request_id, m.code) + _str16(m.message)
    elif isinstance(m, (Ping, Pong)):
        t, p = (PING if isinstance(m, Ping) else PONG), struct.pack("<Q", m.nonce)
    else:
        raise TypeError("not a message: %r" % (m,))
    return struct.pack("<IB", len(p) + 1, t) + p


def read_frame(f, max_frame=0):
    """Read one frame from the binary file f: (type, payload), or None when the
    stream ends cleanly between frames. Raises Truncated, or RPCError
    BAD_FRAME / FRAME_TOO_LARGE (without reading the payload)."""
    head = f.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise Truncated("stream ended inside a frame length")
    (n,) = struct.unpack("<I", head)
    if n == 0:
        raise RPCError(BAD_FRAME, "frame length 0")
    limit = max_frame or DEFAULT_MAX_FRAME
    if n > limit:
        raise RPCError(FRAME_TOO_LARGE, "frame length %d exceeds limit %d" % (n, limit))
    body = f.read(n)
    if len(body) < n:
        raise Truncated("stream ended after %d of %d frame bytes" % (len(body), n))
    return body[0], body[1:]


class _Short(Exception):
    pass


class _Cursor:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise _Short()
        self.i += n
        return self.b[self.i - n:self.i]

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def str16(self):
        return self.take(self.unpack("<H")[0]).decode("utf-8", "replace")


def decode(typ, payload):
    """Parse a frame's payload into a message. Raises RPCError BAD_REQUEST
    (with the request id when the payload holds one), BATCH_TOO_LARGE for a
    PREDICT of more than 65,536 items, or UNKNOWN_TYPE."""
    c, rid, name = _Cursor(payload), 0, TYPE_NAMES.get(typ)
    try:
        if typ == HELLO:
            head, name, version, nonce = c.unpack("<HBII"), c.str16(), c.str16(), b""
            if c.i < len(payload):
                nonce = c.take(c.unpack("<H")[0])
                if len(nonce) not in (0, AUTH_NONCE_LEN):
                    raise RPCError(BAD_REQUEST, "HELLO auth_nonce has %d bytes, want 0 or %d"
                                   % (len(nonce), AUTH_NONCE_LEN))
            return Hello(*head, name, version, nonce)  # bytes after auth_nonce: later additions, ignored
        if typ == PREDICT:
            (rid,) = c.unpack("<Q")
            deadline, it, count = c.unpack("<qBI")
            if rid == 0:
                raise RPCError(BAD_REQUEST, "PREDICT request_id must not be 0", 0)
            if not BYTES <= it <= STRING:
                raise RPCError(BAD_REQUEST, "PREDICT input type %d is not one of 1..5" % it, rid)
            if count * 4 > len(payload) - c.i:
                raise RPCError(BAD_REQUEST, "PREDICT count %d does not fit in the frame" % count, rid)
            if count > MAX_BATCH:
                raise RPCError(BATCH_TOO_LARGE, "batch of %d items exceeds the contract's limit of %d"
                               % (count, MAX_BATCH), rid)
            size, inputs = ITEM_SIZES.get(it, 1), []
            for k in range(count):
                x = c.take(c.unpack("<I")[0])
                if len(x) % size:
                    raise RPCError(BAD_REQUEST, "PREDICT item %d: %d bytes is not a whole number of "
                                   "%d-byte elements" % (k, len(x), size), rid)
                if it == STRING:
                    try:
                        x.decode("utf-8")
                    except UnicodeDecodeError:
                        raise RPCError(BAD_REQUEST, "PREDICT item %d is not valid UTF-8" % k, rid) from None
                inputs.append(x)
            msg = Predict(rid, deadline, it, inputs)
        elif typ == RESULT:
            rid, count = c.unpack("<QI")
            if count * 5 > len(payload) - c.i:
                raise RPCError(BAD_REQUEST, "RESULT count %d does not fit in the frame" % count, rid)
            outputs = []
            for k in range(count):
                status, n = c.unpack("<BI")
                data = c.take(n)
                if status not in (0, 1):
                    raise RPCError(BAD_REQUEST, "RESULT item %d has status %d (want 0 or 1)" % (k, status), rid)
                outputs.append(ItemError(data.decode("utf-8", "replace") or "item failed") if status else data)
            msg = Result(rid, outputs)
        elif typ == ERROR:
            rid, code = c.unpack("<QH")
            msg = RPCError(code, c.str16(), rid)
        elif typ in (PING, PONG):
            msg = (Ping if typ == PING else Pong)(*c.unpack("<Q"))
        elif typ == AUTH:
            msg = Auth(c.take(AUTH_MAC_LEN))
        else:
            raise RPCError(UNKNOWN_TYPE, "unknown message type %d" % typ)
    except _Short:
        raise RPCError(BAD_REQUEST, "%s payload too short or an item overruns the frame" % name, rid) from None
    if c.i != len(payload):
        raise RPCError(BAD_REQUEST, "%s payload has %d bytes after its last field" % (name, len(payload) - c.i), rid)
    return msg


def to_item(data, input_type):
    """The value a model sees for one item's bytes."""
    if input_type in TYPECODES:
        a = array.array(TYPECODES[input_type])
        a.frombytes(data)
        if sys.byteorder == "big":
            a.byteswap()
        return a
    return data.decode("utf-8") if input_type == STRING else bytes(data)


def from_item(x, input_type):
    """The wire bytes of one item: bytes, str, or a sequence of numbers."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    a = array.array(TYPECODES[input_type], x)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def _output(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o)
    if isinstance(o, str):
        return o.encode("utf-8")
    if isinstance(o, BaseException):
        return ItemError((str(o) or "item failed") if isinstance(o, ItemError) else _describe(o))
    try:
        return to_json(o).encode("utf-8")
    except (TypeError, ValueError) as e:
        return ItemError("output is not JSON: %s" % e)


def _describe(e):
    return "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__


def _split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Server:
    """Serves predict on addr. max_inflight bounds the requests computing or
    waiting per connection; concurrent=True lets batches run the model at once.
    With a secret (bytes; default $SLOPROXY_RPC_SECRET), every connection must
    authenticate first: a peer that does not is refused, logged on stderr."""

    def __init__(self, predict, input_type, model_name=None, model_version=None, addr=None,
                 max_batch=0, max_frame=0, max_inflight=4, concurrent=False, default_name="model", secret=None):
        self.predict = predict
        self.input_type = INPUT_TYPES.get(input_type, input_type)
        if self.input_type not in INPUT_TYPE_NAMES:
            raise ValueError("unknown input type %r" % (input_type,))
        self.hello = Hello(VERSION, self.input_type, max_batch, max_frame,
                           model_name or os.environ.get("SLOPROXY_MODEL_NAME") or default_name,
                           model_version or os.environ.get("SLOPROXY_MODEL_VERSION") or "1")
        self.max_batch = min(max_batch or MAX_BATCH, MAX_BATCH)
        self.max_frame, self.max_inflight = max_frame, max_inflight
        self.secret = secret if secret is not None else os.environb.get(b"SLOPROXY_RPC_SECRET") or None
        self.model_lock = contextlib.nullcontext() if concurrent else threading.Lock()
        host, port = _split_addr(addr or os.environ.get("SLOPROXY_RPC_ADDR") or "0.0.0.0:7000")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family)
        self.address = "%s:%d" % self.listener.getsockname()[:2]
        self.closed, self.conns = False, set()

    def serve_forever(self):
        while not self.closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: try again
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on small frames
            # A peer that stops reading must not hold a sender (and the connection's lock) forever;
            # a timeout on the socket would also end idle reads, so bound sends only.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", WRITE_TIMEOUT_S, 0))
            self.conns.add(sock)
            threading.Thread(target=self._serve_conn, args=(sock,), daemon=True).start()

    def start(self):
        """Serve in a background thread; returns self."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self):
        self.closed = True
        for s in [self.listener] + list(self.conns):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _serve_conn(self, sock):
        """Serve one connection with max_inflight threads that take turns at reading
        (leader/follower): the thread that reads a PREDICT answers it itself, after
        letting the next thread read, so no request waits for a hand-off to another
        thread, nor for the interpreter's switch interval to pass the GIL to it. When
        every thread is computing or waiting for the model, nobody reads: backpressure."""
        write_lock, read_lock = threading.Lock(), threading.Lock()
        ended = threading.Event()

        def send(msg):
            data = encode(msg)
            with write_lock:
                sock.sendall(data)

        def work():
            try:
                while True:
                    with read_lock:
                        m = None if ended.is_set() else self._next_predict(f, send)
                        if m is None:
                            return
                    send(self._answer(m))
            except (OSError, Truncated):
                pass  # connection lost or truncated frame: close
            finally:
                ended.set()  # whichever way a thread stops, the connection ends
                self._close_conn(sock)

        try:
            nonce = os.urandom(AUTH_NONCE_LEN) if self.secret else b""
            send(self.hello._replace(auth_nonce=nonce))
            f = sock.makefile("rb")
            if nonce:
                refusal = self._authenticate(sock, f, nonce)
                if refusal:
                    print("sloproxy_rpc: refused peer %s: %s" % (sock.getpeername()[0], refusal.message),
                          file=sys.stderr, flush=True)
                    send(refusal)
                    return self._close_conn(sock)
        except (OSError, Truncated):
            return self._close_conn(sock)
        for _ in range(self.max_inflight - 1):
            threading.Thread(target=work, daemon=True).start()
        work()

    def _close_conn(self, sock):
        self.conns.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _authenticate(self, sock, f, nonce):
        """None when the peer's first frame is an AUTH that answers nonce, else the ERROR to send."""
        sock.settimeout(AUTH_TIMEOUT_S)
        try:
            frame = read_frame(f, self.max_frame)
            if frame is None or frame[0] != AUTH:
                why = "no AUTH frame" if frame is None else "the first frame has type %d, want AUTH" % frame[0]
            elif not hmac.compare_digest(decode(*frame).mac, auth_mac(self.secret, nonce)):
                why = "wrong MAC (the peer has another secret)"
            else:
                return None
        except (RPCError, Truncated, OSError) as e:
            why = "no AUTH frame: %s" % e
        finally:
            sock.settimeout(None)
        return RPCError(UNAUTHENTICATED, "authentication failed: " + why)

    def _next_predict(self, f, send):
        """Read frames from f, answering PINGs and bad requests, until a PREDICT to
        compute; None when the connection is to close."""
        while True:
            try:
                frame = read_frame(f, self.max_frame)
            except RPCError as e:  # BAD_FRAME, FRAME_TOO_LARGE: answer, then close
                send(e)
                return None
            if frame is None:
                return None
            typ, payload = frame
            if typ not in (PING, PREDICT):
                send(RPCError(UNKNOWN_TYPE, "unknown message type %d" % typ if typ not in TYPE_NAMES
                              else "a container does not accept %s" % TYPE_NAMES[typ]))
                continue
            try:
                m = decode(typ, payload)
                if typ == PING:
                    send(Pong(m.nonce))
                    continue
                if m.input_type != self.input_type:
                    raise RPCError(WRONG_INPUT_TYPE, "model takes %s, request has %s" % (
                        INPUT_TYPE_NAMES[self.input_type], INPUT_TYPE_NAMES[m.input_type]), m.request_id)
                if len(m.inputs) > self.max_batch:
                    raise RPCError(BATCH_TOO_LARGE, "batch of %d items exceeds max_batch %d"
                                   % (len(m.inputs), self.max_batch), m.request_id)
                return m
            except RPCError as e:
                send(e)

    def _answer(self, m):
        try:
            # Only the deadline check and the model run under the model's lock: decoding the
            # inputs and encoding the outputs need not wait for another request's compute.
            inputs = [to_item(x, m.input_type) for x in m.inputs]
            with self.model_lock:
                if m.deadline and time.time_ns() > m.deadline:
                    return RPCError(DEADLINE_EXCEEDED, "deadline passed before compute", m.request_id)
                if not inputs:
                    return Result(m.request_id, [])
                try:
                    outputs = list(self.predict(inputs))
                except Exception as e:
                    if len(inputs) == 1:
                        return RPCError(MODEL_ERROR, _describe(e), m.request_id)
                    outputs = [self._one(x) for x in inputs]  # tell good items from bad
            if len(outputs) != len(inputs):
                return RPCError(MODEL_ERROR, "model returned %d outputs for %d inputs"
                                % (len(outputs), len(inputs)), m.request_id)
            return Result(m.request_id, [_output(o) for o in outputs])
        except Exception as e:  # never let a request go unanswered
            return RPCError(MODEL_ERROR, _describe(e), m.request_id)

    def _one(self, x):
        try:
            out = list(self.predict([x]))
        except Exception as e:
            return e
        return out[0] if len(out) == 1 else ItemError("model returned %d outputs for 1 input" % len(out))


def serve(predict, input_type, model_name=None, model_version=None, addr=None, max_batch=0,
          max_frame=0, **options):
    """Serve predict until the process is stopped. Unset arguments come from
    SLOPROXY_RPC_ADDR, SLOPROXY_MODEL_NAME and SLOPROXY_MODEL_VERSION; the
    secret peers must prove (options' secret) from SLOPROXY_RPC_SECRET."""
    server = Server(predict, input_type, model_name, model_version, addr, max_batch, max_frame, **options)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as PID 1 in a container, too
    h = server.hello
    print("sloproxy_rpc: serving %s version %s (%s) on %s" % (
        h.model_name, h.model_version, INPUT_TYPE_NAMES[h.input_type], server.address), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()


class Client:
    """A minimal blocking client: one request at a time. With a secret (bytes)
    it authenticates, and refuses a container that does not ask it to; a
    container that refuses the secret raises RPCError UNAUTHENTICATED."""

    def __init__(self, addr, timeout=30, secret=None):
        self.sock = socket.create_connection(_split_addr(addr), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.hello, self.next_id = self.read(), 1
        if not isinstance(self.hello, Hello):
            raise ConnectionError("expected HELLO, got %r" % (self.hello,))
        nonce = self.hello.auth_nonce
        if nonce and not secret:
            raise RPCError(UNAUTHENTICATED, "the container asks to authenticate; no secret given")
        if secret and not nonce:
            raise ConnectionError("the container does not ask to authenticate, but a secret was given")
        if nonce:
            self.sock.sendall(encode(Auth(auth_mac(secret, nonce))) + encode(Ping(0)))
            m = self.read()
            if isinstance(m, RPCError):
                raise m
            if not isinstance(m, Pong):
                raise ConnectionError("expected PONG after AUTH, got %r" % (m,))

    def read(self):
        frame = read_frame(self.file)
        if frame is None:
            raise ConnectionError("connection closed")
        return decode(*frame)

    def send(self, msg):
        self.sock.sendall(encode(msg))

    def predict(self, inputs, deadline=0):
        """Outputs (bytes, or ItemError) for inputs; raises RPCError for an ERROR answer."""
        rid, self.next_id = self.next_id, self.next_id + 1
        it = self.hello.input_type
        self.send(Predict(rid, deadline, it, [from_item(x, it) for x in inputs]))
        while True:
            m = self.read()
            if isinstance(m, RPCError) and m.request_id in (0, rid):
                raise m
            if isinstance(m, Result) and m.request_id == rid:
                return m.outputs

    def close(self):
        self.file.close()
        self.sock.close()
