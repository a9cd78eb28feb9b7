"""End-to-end tests of the example containers (examples/*/serve.py).

Trains the digits models with internal/testutil/testdata/train_digits.py into a
temporary directory, starts each example as a subprocess on 127.0.0.1, sends
every held-out digit through sloproxy_rpc.Client and compares the answers
with the predictions the training script recorded. The ONNX Runtime and
TensorFlow tests are skipped, loudly, where those packages are not installed.

Run with Debian's Python: cd containers/python && /usr/bin/python3 -m unittest -v
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import sloproxy_rpc as rpc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TRAIN = os.path.join(REPO, "internal", "testutil", "testdata", "train_digits.py")
MODELS = HELDOUT = None


def setUpModule():
    global MODELS, HELDOUT
    for module in ("numpy", "sklearn", "torch"):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError("%s is not importable by %s: run these tests with /usr/bin/python3"
                               % (module, sys.executable))
    MODELS = tempfile.mkdtemp(prefix="sloproxy-digits-")
    subprocess.run([sys.executable, TRAIN, "--out", MODELS], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(os.path.join(MODELS, "heldout.json")) as f:
        HELDOUT = json.load(f)


def tearDownModule():
    if MODELS:
        shutil.rmtree(MODELS, ignore_errors=True)


class Example:
    """An example container running as a subprocess on a free 127.0.0.1 port."""

    def __init__(self, example, *args, env=None):
        cmd = [sys.executable, os.path.join(REPO, "examples", example, "serve.py"), "--addr", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))
        self.killer = threading.Timer(120, self.proc.kill)  # never outlive a hung test
        self.killer.start()
        self._address, self.log = None, []

    @property
    def address(self):
        """The address from the server's start line (waits for it)."""
        while self._address is None:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError("example exited (%s):\n%s" % (self.proc.wait(), "".join(self.log)))
            self.log.append(line)
            if line.startswith("sloproxy_rpc: serving"):
                self._address = line.rsplit(" on ", 1)[1].strip()
                threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        return self._address

    def close(self):
        self.killer.cancel()
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stderr.close()


class ExamplesTest(unittest.TestCase):
    def start(self, example, *args, env=None):
        ex = Example(example, *args, env=env)
        self.addCleanup(ex.close)
        return ex

    def client(self, ex):
        c = rpc.Client(ex.address)
        self.addCleanup(c.close)
        return c

    def outputs(self, ex, rows, batch=64):
        """JSON-decoded outputs for rows, sent in batches; no item may fail."""
        c, out = self.client(ex), []
        for i in range(0, len(rows), batch):
            got = c.predict(rows[i:i + batch])
            failed = [o for o in got if isinstance(o, rpc.ItemError)]
            self.assertEqual(failed, [])
            out += [json.loads(o) for o in got]
        return out

    def assertRowsClose(self, got, want, tol):
        self.assertEqual(len(got), len(want))
        worst = max(abs(g - w) for gr, wr in zip(got, want) for g, w in zip(gr, wr))
        self.assertEqual([len(r) for r in got], [len(r) for r in want])
        self.assertLess(worst, tol)

    def test_sklearn(self):
        names = ("logreg", "knn", "tree", "constant")
        model = lambda name: os.path.join(MODELS, "sklearn_%s.joblib" % name)  # noqa: E731
        servers = {name: self.start("sklearn", "--model", model(name), "--name", name) for name in names}
        proba = self.start("sklearn", "--model", model("logreg"), "--method", "predict_proba")
        X = HELDOUT["X"]
        for name, ex in servers.items():
            with self.subTest(name):
                self.assertEqual(self.outputs(ex, X), HELDOUT["sklearn"][name])
        self.assertRowsClose(self.outputs(proba, X), HELDOUT["sklearn_proba_logreg"], 1e-9)
        # Items of the wrong length fail alone; the others are still answered.
        got = self.client(servers["logreg"]).predict([X[0], [1.0, 2.0, 3.0], X[1], []])
        self.assertEqual(got[0::2], [b"%d" % y for y in HELDOUT["sklearn"]["logreg"][:2]])
        self.assertIsInstance(got[1], rpc.ItemError)
        self.assertIn("features", got[1].args[0])
        self.assertIsInstance(got[3], rpc.ItemError)

    def test_pytorch(self):
        ex = self.start("pytorch", "--model", os.path.join(MODELS, "mlp.pt"), "--name", "digits-mlp",
                        env={"SLOPROXY_MODEL_NAME": "not-this", "SLOPROXY_MODEL_VERSION": "5"})
        c = self.client(ex)
        self.assertEqual(c.hello, rpc.Hello(1, rpc.FLOAT32, 0, 0, "digits-mlp", "5"))
        self.assertRowsClose(self.outputs(ex, HELDOUT["X"]), HELDOUT["torch"], 1e-5)
        got = c.predict([HELDOUT["X"][0], [0.0] * 63])
        self.assertIsInstance(got[1], rpc.ItemError)

    def require(self, module):
        if importlib.util.find_spec(module) is None:
            msg = "NOT RUN: %s not installed on this machine" % module
            print("\n" + "!" * 70 + "\n" + msg + "\n" + "!" * 70, file=sys.stderr, flush=True)
            self.skipTest(msg)

    def test_onnxruntime(self):
        self.require("onnxruntime")
        ex = self.start("onnxruntime", "--model", os.path.join(MODELS, "mlp.onnx"))
        self.assertRowsClose(self.outputs(ex, HELDOUT["X"]), HELDOUT["torch"], 1e-5)

    def test_tensorflow(self):
        self.require("tensorflow")
        import numpy as np
        import tensorflow as tf
        rng = np.random.default_rng(0)
        w, b = rng.normal(size=(64, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)

        class Linear(tf.Module):
            def __init__(self):
                super().__init__()
                self.w, self.b = tf.Variable(w), tf.Variable(b)

            @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
            def __call__(self, x):
                return {"scores": tf.matmul(x / 16.0, self.w) + self.b}

        path = os.path.join(MODELS, "tf_linear")
        module = Linear()
        tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
        ex = self.start("tensorflow", "--model", path)
        X = np.array(HELDOUT["X"])
        self.assertRowsClose(self.outputs(ex, HELDOUT["X"]), (X / 16.0 @ w + b).tolist(), 1e-4)


if __name__ == "__main__":
    unittest.main()
