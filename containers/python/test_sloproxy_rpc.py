"""Tests of sloproxy_rpc: the golden vectors of docs/rpc.md, and a real server on
127.0.0.1 for each row of the contract's trouble table.

Run: cd containers/python && /usr/bin/python3 -m unittest -v
"""
import array
import io
import json
import os
import socket
import struct
import threading
import time
import unittest

import sloproxy_rpc as rpc

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "rpc", "testdata", "golden")


def golden_message(g):
    """The message a manifest entry describes."""
    it = rpc.INPUT_TYPES.get(g.get("input_type"), 0)
    t = g["type"]
    if t == "HELLO":
        return rpc.Hello(g["version"], it, g["max_batch"], g["max_frame"], g["model"], g["model_version"],
                         bytes.fromhex(g.get("auth_nonce", "")))
    if t == "AUTH":
        return rpc.Auth(bytes.fromhex(g["mac"]))
    if t == "PREDICT":
        return rpc.Predict(g["request_id"], g["deadline"], it, [bytes.fromhex(x) for x in g["inputs"]])
    if t == "RESULT":
        return rpc.Result(g["request_id"], [rpc.ItemError(o["error"]) if "error" in o else bytes.fromhex(o["data"])
                                            for o in g["outputs"]])
    if t == "ERROR":
        return rpc.RPCError(g["code"], g["message"], g["request_id"])
    return {"PING": rpc.Ping, "PONG": rpc.Pong}[t](g["nonce"])


def read_one(data, max_frame=0):
    frame = rpc.read_frame(io.BytesIO(data), max_frame)
    return rpc.decode(*frame)


class GoldenTest(unittest.TestCase):
    def test_vectors(self):
        with open(os.path.join(GOLDEN, "manifest.json")) as f:
            vectors = json.load(f)["vectors"]
        self.assertGreaterEqual(len(vectors), 25)
        for v in vectors:
            with self.subTest(v["name"]):
                with open(os.path.join(GOLDEN, v["file"]), "rb") as f:
                    data = f.read()
                if "secret" in v:
                    self.assertEqual(rpc.auth_mac(v["secret"].encode(), bytes.fromhex(v["auth_nonce"])),
                                     bytes.fromhex(v["message"]["mac"]))
                if "message" in v:
                    want = golden_message(v["message"])
                    self.assertEqual(read_one(data, v.get("max_frame", 0)), want)
                    self.assertEqual(rpc.encode(want), data)
                    continue
                try:
                    got = read_one(data, v.get("max_frame", 0))
                except rpc.Truncated:
                    name = "TRUNCATED"
                except rpc.RPCError as e:
                    name = rpc.CODE_NAMES[e.code]
                else:
                    self.fail("decoded %r, want error %s" % (got, v["error"]))
                self.assertEqual(name, v["error"])

    def test_bad_request_carries_id(self):
        with open(os.path.join(GOLDEN, "bad_trailing_bytes.bin"), "rb") as f:
            data = f.read()
        with self.assertRaises(rpc.RPCError) as cm:
            read_one(data)
        self.assertEqual(cm.exception.request_id, 11)
        with self.assertRaises(rpc.RPCError) as cm:  # fewer than 8 payload bytes: id 0
            rpc.decode(rpc.PREDICT, b"\x01\x02\x03")
        self.assertEqual((cm.exception.code, cm.exception.request_id), (rpc.BAD_REQUEST, 0))

    def test_more_decode_errors(self):
        cases = {
            "batch over 65536": (struct.pack("<QqBI", 1, 0, 1, 65537) + b"\0" * 4 * 65537, rpc.BATCH_TOO_LARGE),
            "count overruns": (struct.pack("<QqBI", 1, 0, 1, 3) + b"\0" * 8, rpc.BAD_REQUEST),
            "bad utf-8": (struct.pack("<QqBII", 1, 0, 5, 1, 2) + b"\xff\xfe", rpc.BAD_REQUEST),
            "int32 not whole": (struct.pack("<QqBII", 1, 0, 2, 1, 3) + b"abc", rpc.BAD_REQUEST),
        }
        for name, (payload, code) in cases.items():
            with self.subTest(name), self.assertRaises(rpc.RPCError) as cm:
                rpc.decode(rpc.PREDICT, payload)
            self.assertEqual((cm.exception.code, cm.exception.request_id), (code, 1))
        for typ, payload in [(rpc.PING, b"1234567"), (rpc.PONG, b"123456789"), (rpc.ERROR, b"\0" * 9)]:
            with self.subTest(typ), self.assertRaises(rpc.RPCError):
                rpc.decode(typ, payload)

    def test_hello_ignores_appended_fields(self):
        hello = rpc.Hello(1, 3, 0, 0, "m", "2", bytes(32))
        frame = rpc.encode(hello)
        frame = struct.pack("<I", len(frame) - 4 + 3) + frame[4:] + b"new"
        self.assertEqual(read_one(frame), hello)

    def test_long_error_message_truncated(self):
        m = rpc.decode(*rpc.read_frame(io.BytesIO(rpc.encode(rpc.RPCError(8, "é" * 40000, 3)))))
        self.assertEqual(len(m.message.encode()), 65534)

    def test_items_typed(self):
        for it, values in [("int32", [1, -1, 2 ** 31 - 1]), ("float32", [1.5, -2.0]), ("float64", [3.141592653589793])]:
            code = rpc.INPUT_TYPES[it]
            item = rpc.to_item(rpc.from_item(values, code), code)
            self.assertIsInstance(item, array.array)
            self.assertEqual(item.typecode, rpc.TYPECODES[code])
            self.assertEqual(item.tolist(), values)
        self.assertEqual(rpc.to_item("héllo".encode(), rpc.STRING), "héllo")
        self.assertEqual(rpc.to_item(b"\x00\xff", rpc.BYTES), b"\x00\xff")


class ServerTest(unittest.TestCase):
    def start(self, predict, input_type="float64", **kw):
        server = rpc.Server(predict, input_type, model_name="test", addr="127.0.0.1:0", **kw).start()
        self.addCleanup(server.close)
        return server

    def connect(self, server):
        """A raw connection whose HELLO has been read: (socket, file)."""
        s = socket.create_connection(("127.0.0.1", int(server.address.rsplit(":", 1)[1])), timeout=10)
        f = s.makefile("rb")
        self.addCleanup(s.close)
        self.addCleanup(f.close)
        self.assertEqual(read(f), server.hello)
        return s, f

    def predict_frame(self, rid, inputs, input_type=rpc.FLOAT64, deadline=0):
        return rpc.encode(rpc.Predict(rid, deadline, input_type, [rpc.from_item(x, input_type) for x in inputs]))

    def assertClosed(self, f):
        self.assertIsNone(rpc.read_frame(f))

    def assertServing(self, server):
        s, f = self.connect(server)
        s.sendall(rpc.encode(rpc.Ping(42)))
        self.assertEqual(read(f), rpc.Pong(42))

    def test_hello(self):
        server = self.start(sum, "float32", model_version="7", max_batch=8)
        s, f = self.connect(server)
        self.assertEqual(server.hello, rpc.Hello(1, rpc.FLOAT32, 8, 0, "test", "7"))

    def test_authentication(self):
        server = self.start(lambda xs: [sum(x) for x in xs], "float64", secret=b"right")
        addr = server.address
        with self.assertRaises(rpc.RPCError) as e:
            rpc.Client(addr, timeout=10, secret=b"wrong")
        self.assertEqual(e.exception.code, rpc.UNAUTHENTICATED)
        with self.assertRaises(rpc.RPCError) as e:
            rpc.Client(addr, timeout=10)
        self.assertEqual(e.exception.code, rpc.UNAUTHENTICATED)
        s = socket.create_connection(("127.0.0.1", int(addr.rsplit(":", 1)[1])), timeout=10)
        f = s.makefile("rb")
        self.addCleanup(s.close)
        self.addCleanup(f.close)  # a PREDICT before any AUTH: refused, closed
        self.assertEqual(len(read(f).auth_nonce), rpc.AUTH_NONCE_LEN)
        s.sendall(self.predict_frame(1, [[1.0]]))
        self.assertEqual(read(f).code, rpc.UNAUTHENTICATED)
        self.assertClosed(f)
        c = rpc.Client(addr, timeout=10, secret=b"right")  # the replica still serves the right secret
        self.addCleanup(c.close)
        self.assertEqual(c.predict([[1.0, 2.0]]), [b"3.0"])
        plain = self.start(sum, "float64")
        with self.assertRaises(ConnectionError):
            rpc.Client(plain.address, timeout=10, secret=b"right")

    def test_hello_from_env(self):
        env = {"SLOPROXY_MODEL_NAME": "envname", "SLOPROXY_MODEL_VERSION": "9", "SLOPROXY_RPC_ADDR": "127.0.0.1:0"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            server = rpc.Server(sum, "bytes")
            server.close()
            named = rpc.Server(sum, "bytes", model_name="flag", model_version="2", addr="127.0.0.1:0")
            named.close()
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        self.assertEqual((server.hello.model_name, server.hello.model_version), ("envname", "9"))
        self.assertTrue(server.address.startswith("127.0.0.1:"))
        self.assertEqual((named.hello.model_name, named.hello.model_version), ("flag", "2"))

    def test_predict_and_outputs(self):
        outputs = [b"\x00raw", "text", {"a": [1, 2.5]}, 3, rpc.ItemError("bad item"), ValueError("worse")]
        server = self.start(lambda xs: outputs[:len(xs)], "bytes")
        c = rpc.Client(server.address)
        self.addCleanup(c.close)
        got = c.predict([b"x"] * 6)
        self.assertEqual(got, [b"\x00raw", b"text", b'{"a":[1,2.5]}', b"3", rpc.ItemError("bad item"),
                               rpc.ItemError("ValueError: worse")])
        self.assertEqual(c.predict([]), [])

    def test_model_sees_typed_items(self):
        seen = []
        server = self.start(lambda xs: seen.extend(xs) or [len(x) for x in xs], "string")
        c = rpc.Client(server.address)
        self.addCleanup(c.close)
        self.assertEqual(c.predict(["héllo", ""]), [b"5", b"0"])
        self.assertEqual(seen, ["héllo", ""])

    def test_truncated_frame_closes(self):
        server = self.start(lambda xs: [0] * len(xs))
        s, f = self.connect(server)
        s.sendall(self.predict_frame(1, [[1.0]])[:-3])
        s.shutdown(socket.SHUT_WR)
        self.assertClosed(f)
        self.assertServing(server)

    def test_zero_length(self):
        server = self.start(lambda xs: [0] * len(xs))
        s, f = self.connect(server)
        s.sendall(b"\0\0\0\0")
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.BAD_FRAME, 0))
        self.assertClosed(f)
        self.assertServing(server)

    def test_frame_too_large_not_read(self):
        server = self.start(lambda xs: [0] * len(xs), max_frame=100)
        self.assertEqual(server.hello.max_frame, 100)
        s, f = self.connect(server)
        s.sendall(struct.pack("<IB", 101, rpc.PREDICT))  # the 100 payload bytes never come
        self.assertEqual(read(f).code, rpc.FRAME_TOO_LARGE)
        self.assertClosed(f)
        s, f = self.connect(server)
        s.sendall(self.predict_frame(1, [[1.0] * 9]))  # exactly 100 bytes
        self.assertIsInstance(read(f), rpc.Result)

    def test_unknown_type_kept(self):
        server = self.start(lambda xs: [0] * len(xs))
        s, f = self.connect(server)
        s.sendall(b"\x03\0\0\0\x09\x01\x02" + rpc.encode(rpc.Pong(1)))
        self.assertEqual(read(f), rpc.RPCError(rpc.UNKNOWN_TYPE, "unknown message type 9", 0))
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.UNKNOWN_TYPE, 0))
        s.sendall(rpc.encode(rpc.Ping(7)))
        self.assertEqual(read(f), rpc.Pong(7))

    def test_request_errors_kept(self):
        calls = []
        server = self.start(lambda xs: calls.append(xs) or [0] * len(xs), max_batch=2)
        s, f = self.connect(server)
        with open(os.path.join(GOLDEN, "bad_trailing_bytes.bin"), "rb") as g:
            s.sendall(g.read())
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.BAD_REQUEST, 11))
        s.sendall(struct.pack("<IB", 6, rpc.PREDICT) + b"\x05\0\0\0\0")  # 5 payload bytes: id unknown
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.BAD_REQUEST, 0))
        s.sendall(self.predict_frame(3, [[1.0]], input_type=rpc.FLOAT32))
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.WRONG_INPUT_TYPE, 3))
        s.sendall(self.predict_frame(4, [[1.0]] * 3))
        e = read(f)
        self.assertEqual((e.code, e.request_id), (rpc.BATCH_TOO_LARGE, 4))
        s.sendall(self.predict_frame(5, [[1.0]] * 2))
        self.assertEqual(read(f), rpc.Result(5, [b"0", b"0"]))
        self.assertEqual(len(calls), 1)

    def test_expired_deadline_not_computed(self):
        calls, release = [], threading.Event()

        def predict(xs):
            calls.append(len(xs))
            release.wait(10)
            return [x[0] for x in xs]

        server = self.start(predict)
        c = rpc.Client(server.address)
        self.addCleanup(c.close)
        with self.assertRaises(rpc.RPCError) as cm:
            c.predict([[1.0]], deadline=time.time_ns() - 1)
        self.assertEqual((cm.exception.code, cm.exception.request_id), (rpc.DEADLINE_EXCEEDED, 1))
        self.assertEqual(calls, [])
        # A request whose deadline passes while it waits behind a slow batch.
        s, f = self.connect(server)
        s.sendall(self.predict_frame(1, [[1.0]]))
        while not calls:
            time.sleep(0.01)
        s.sendall(self.predict_frame(2, [[2.0]], deadline=time.time_ns() + 50_000_000))
        time.sleep(0.2)
        release.set()
        answers = {m.request_id: m for m in (read(f), read(f))}
        self.assertEqual(answers[1], rpc.Result(1, [b"1.0"]))
        self.assertEqual(answers[2].code, rpc.DEADLINE_EXCEEDED)
        self.assertEqual(calls, [1])
        self.assertEqual(c.predict([[3.0]], deadline=time.time_ns() + 10 ** 10), [b"3.0"])

    def test_item_errors_and_model_errors(self):
        def predict(xs):
            for x in xs:
                if x[0] < 0:
                    raise ValueError("negative input")
            return [x[0] * 2 for x in xs]

        server = self.start(predict)
        c = rpc.Client(server.address)
        self.addCleanup(c.close)
        self.assertEqual(c.predict([[1.0], [-1.0], [2.5]]),
                         [b"2.0", rpc.ItemError("ValueError: negative input"), b"5.0"])
        with self.assertRaises(rpc.RPCError) as cm:
            c.predict([[-1.0]])
        self.assertEqual(cm.exception, rpc.RPCError(rpc.MODEL_ERROR, "ValueError: negative input", 2))
        self.assertEqual(c.predict([[4.0]]), [b"8.0"])

    def test_wrong_output_count(self):
        server = self.start(lambda xs: [1])
        c = rpc.Client(server.address)
        self.addCleanup(c.close)
        with self.assertRaises(rpc.RPCError) as cm:
            c.predict([[1.0], [2.0]])
        self.assertEqual(cm.exception.code, rpc.MODEL_ERROR)
        self.assertEqual(c.predict([[1.0]]), [b"1"])

    def test_ping_while_computing(self):
        started, release = threading.Event(), threading.Event()

        def predict(xs):
            started.set()
            release.wait(10)
            return ["done"] * len(xs)

        server = self.start(predict)
        s, f = self.connect(server)
        s.sendall(self.predict_frame(1, [[1.0]]))
        self.assertTrue(started.wait(5))
        s.sendall(rpc.encode(rpc.Ping(99)))
        self.assertEqual(read(f), rpc.Pong(99))
        release.set()
        self.assertEqual(read(f), rpc.Result(1, [b"done"]))

    def test_pipelined_answers_by_id(self):
        server = self.start(lambda xs: [sum(x) for x in xs], concurrent=True)
        s, f = self.connect(server)
        s.sendall(b"".join(self.predict_frame(rid, [[rid, 0.5]] * rid) for rid in range(1, 11)))
        answers = {m.request_id: m.outputs for m in (read(f) for _ in range(10))}
        self.assertEqual(answers, {rid: [b"%d.5" % rid] * rid for rid in range(1, 11)})

    def test_bounded_compute(self):
        for concurrent, max_inflight, want in [(True, 2, 2), (False, 4, 1)]:
            with self.subTest(concurrent=concurrent):
                lock, active, peak = threading.Lock(), [0], [0]

                def predict(xs):
                    with lock:
                        active[0] += 1
                        peak[0] = max(peak[0], active[0])
                    time.sleep(0.02)
                    with lock:
                        active[0] -= 1
                    return [0] * len(xs)

                server = self.start(predict, concurrent=concurrent, max_inflight=max_inflight)
                s, f = self.connect(server)
                s.sendall(b"".join(self.predict_frame(rid, [[1.0]]) for rid in range(1, 9)))
                self.assertEqual(sorted(read(f).request_id for _ in range(8)), list(range(1, 9)))
                self.assertEqual(peak[0], want)

    def test_several_connections(self):
        server = self.start(lambda xs: [x[0] for x in xs])
        clients = [rpc.Client(server.address) for _ in range(3)]
        for i, c in enumerate(clients):
            self.assertEqual(c.predict([[float(i)]]), [b"%d.0" % i])
            c.close()


def read(f):
    frame = rpc.read_frame(f)
    assert frame is not None, "connection closed"
    return rpc.decode(*frame)


if __name__ == "__main__":
    unittest.main()
