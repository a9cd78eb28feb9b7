"""The OIP v2 gRPC API called as an existing client calls it: Debian's
python3-grpcio with stubs that python3-grpc-tools generates here, at test
time, from the project's grpc_predict_v2.proto.

Run by TestPythonClient (grpc_test.go), which starts the proxy and a
scikit-learn digits model and passes their addresses in the environment:
SLOPROXY_GRPC, SLOPROXY_REST, SLOPROXY_PROTO_DIR, SLOPROXY_FEATURE_REDIS. The health service's
client comes from testdata/health.proto, grpc.health.v1 as gRPC publishes
it, which Debian's grpcio does not ship.
"""
import json
import os
import socket
import struct
import sys
import tempfile
import unittest
import urllib.request

import grpc
from grpc_tools import protoc
from sklearn.datasets import load_digits

OUT = tempfile.mkdtemp(prefix="sloproxy-grpc-stubs-")
HERE = os.path.dirname(os.path.abspath(__file__))
for proto_dir, proto in ((os.environ["SLOPROXY_PROTO_DIR"], "grpc_predict_v2.proto"), (HERE, "health.proto")):
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + OUT, "--grpc_python_out=" + OUT,
                    os.path.join(proto_dir, proto)]) != 0:
        raise SystemExit("protoc failed on " + proto)
sys.path.insert(0, OUT)
import grpc_predict_v2_pb2 as pb  # noqa: E402
import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402

APP, MODEL, FX, SPLIT = "digits", "digits-logreg", "digits-fx", "digits-split"
ROWS = load_digits().data[:40].tolist()


def rest_predict(rows):
    body = json.dumps({"input_batch": rows}).encode()
    req = urllib.request.Request("http://%s/apps/%s/predict" % (os.environ["SLOPROXY_REST"], APP), data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return [p["output"] for p in json.load(resp)["batch_predictions"]]


def hset_pixels(key, row):
    """HSET key p0 .. p63 in the feature store, over a plain socket."""
    args = [b"HSET", key.encode()]
    for i, v in enumerate(row):
        args += [b"p%d" % i, repr(float(v)).encode()]
    cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    host, port = os.environ["SLOPROXY_FEATURE_REDIS"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(cmd)
        reply = s.recv(64)
    if not reply.startswith(b":"):
        raise RuntimeError("HSET: %r" % reply)


def infer_request(name, rows, raw=False, datatype="FP64", params=None):
    flat = [v for r in rows for v in r]
    contents = None
    if datatype == "FP64" and not raw:
        contents = pb.InferTensorContents(fp64_contents=flat)
    elif not raw:
        contents = pb.InferTensorContents(fp32_contents=flat)
    t = pb.ModelInferRequest.InferInputTensor(name="input", datatype=datatype, shape=[len(rows), 64], contents=contents)
    req = pb.ModelInferRequest(model_name=name, id="q1", inputs=[t])
    if raw:
        req.raw_input_contents.append(struct.pack("<%dd" % len(flat), *flat))
    for k, v in (params or {}).items():
        req.parameters[k].int64_param = v
    return req


class GRPCClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(os.environ["SLOPROXY_GRPC"])
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def test_health_serving(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "inference.GRPCInferenceService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_server_and_model_metadata(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=5).ready)
        self.assertEqual(self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5).name, "sloproxy")
        md = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=5)
        self.assertEqual((md.name, md.inputs[0].datatype), (MODEL, "FP64"))

    def test_answers_equal_rest(self):
        want = rest_predict(ROWS)
        self.assertEqual(len(set(want)), 10, "the rows cover every digit")
        for name in (APP, MODEL):
            for raw in (False, True):
                resp = self.stub.ModelInfer(infer_request(name, ROWS, raw=raw), timeout=10)
                out = resp.outputs[0]
                self.assertEqual((resp.id, out.datatype, list(out.shape)), ("q1", "FP64", [len(ROWS)]))
                self.assertEqual([int(v) for v in out.contents.fp64_contents], want, (name, raw))
                self.assertNotIn("sloproxy_default", resp.parameters)

    def test_features_from_redis(self):
        # The app digits-fx looks all 64 pixels up under img:{img}: the
        # request carries only the ids.
        rows = ROWS[:10]
        for i, r in enumerate(rows):
            hset_pixels("img:%d" % i, r)

        def ask():
            ids = pb.ModelInferRequest.InferInputTensor(name="img", datatype="BYTES", shape=[len(rows)],
                                                        contents=pb.InferTensorContents(bytes_contents=[b"%d" % i for i in range(len(rows))]))
            resp = self.stub.ModelInfer(pb.ModelInferRequest(model_name=FX, inputs=[ids]), timeout=10)
            self.assertNotIn("sloproxy_default", resp.parameters)
            return [int(v) for v in resp.outputs[0].contents.fp64_contents]
        self.assertEqual(ask(), rest_predict(rows))
        # A changed feature changes the next answer: no stale cache hit.
        other = next(r for r, y in zip(ROWS, rest_predict(ROWS)) if y != rest_predict(rows[:1])[0])
        hset_pixels("img:0", other)
        self.assertEqual(ask(), rest_predict([other] + rows[1:]))
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: self.stub.ModelInfer(pb.ModelInferRequest(model_name=FX, inputs=[
            pb.ModelInferRequest.InferInputTensor(name="img", datatype="BYTES", shape=[1],
                                                  contents=pb.InferTensorContents(bytes_contents=[b"nope"]))]), timeout=5))

    def test_features_fill_a_named_input(self):
        # The app digits-split takes its input as three named parts: top
        # (pixels 0-23) and bottom (40-63) from the request, middle (24-39)
        # looked up under img:{img}.
        rows = ROWS[10:20]
        for i, r in enumerate(rows):
            hset_pixels("img:split%d" % i, r)

        def tensor(name, part):
            flat = [v for r in rows for v in r[part]]
            return pb.ModelInferRequest.InferInputTensor(name=name, datatype="FP64", shape=[len(rows), len(flat) // len(rows)],
                                                         contents=pb.InferTensorContents(fp64_contents=flat))
        ids = pb.ModelInferRequest.InferInputTensor(name="img", datatype="BYTES", shape=[len(rows)],
                                                    contents=pb.InferTensorContents(bytes_contents=[b"split%d" % i for i in range(len(rows))]))
        bottom, top = tensor("bottom", slice(40, 64)), tensor("top", slice(0, 24))
        resp = self.stub.ModelInfer(pb.ModelInferRequest(model_name=SPLIT, inputs=[bottom, ids, top]), timeout=10)
        self.assertNotIn("sloproxy_default", resp.parameters)
        self.assertEqual([int(v) for v in resp.outputs[0].contents.fp64_contents], rest_predict(rows))
        md = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=SPLIT), timeout=5)
        self.assertEqual([(t.name, list(t.shape)) for t in md.inputs], [("top", [-1, 24]), ("bottom", [-1, 24]), ("img", [-1])])
        err = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                              lambda: self.stub.ModelInfer(pb.ModelInferRequest(model_name=SPLIT, inputs=[ids, top]), timeout=5))
        self.assertIn('no input "bottom"', err.details())

    def assertCode(self, code, call):
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception

    def test_bad_datatype(self):
        err = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                              lambda: self.stub.ModelInfer(infer_request(MODEL, ROWS[:1], datatype="FP32"), timeout=5))
        self.assertIn("the model takes FP64", err.details())

    def test_unknown_model(self):
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: self.stub.ModelInfer(infer_request("nope", ROWS[:1]), timeout=5))
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: self.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=5))

    def test_expired_deadline(self):
        # Each call asks rows no other call asks, so that no cache entry
        # (an abandoned inference still fills the cache) answers them.
        def rows(k):
            return [[v + 0.25 * k for v in r] for r in ROWS[:2]]
        # The call's own deadline, already spent.
        self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: self.stub.ModelInfer(infer_request(MODEL, rows(1)), timeout=1e-6))
        # The protocol's timeout parameter, 1 µs: a model addressed by
        # name answers DEADLINE_EXCEEDED; an app its default output, flagged.
        self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED,
                        lambda: self.stub.ModelInfer(infer_request(MODEL, rows(2), params={"timeout": 1}), timeout=5))
        resp = self.stub.ModelInfer(infer_request(APP, rows(3), params={"timeout": 1}), timeout=5)
        self.assertTrue(resp.parameters["sloproxy_default"].bool_param)
        self.assertEqual(resp.parameters["sloproxy_default_rows"].string_param, "0,1")
        self.assertIn("deadline", resp.parameters["sloproxy_default_explanation"].string_param)


if __name__ == "__main__":
    unittest.main(verbosity=2)
