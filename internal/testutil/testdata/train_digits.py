"""Train the test models on scikit-learn's bundled digits data set (no download).

Run: /usr/bin/python3 train_digits.py --out DIR

Deterministic: fixed seeds, train/test split with test_size=0.3 and
random_state=0. Writes into DIR:

  sklearn_logreg.joblib    LogisticRegression
  sklearn_knn.joblib       KNeighborsClassifier(algorithm="kd_tree")
  sklearn_tree.joblib      DecisionTreeClassifier(max_depth=3)
  sklearn_constant.joblib  DummyClassifier(strategy="most_frequent")
  mlp.pt                   TorchScript MLP 64 -> 32 -> ReLU -> 10 (logits)
  mlp.onnx                 the same MLP, torch.onnx.export, opset 13, input
                           "input" and output "output" with a dynamic batch axis
  heldout.json             {"X": held-out rows, 64 raw pixel values 0..16 each,
                            "y": their labels,
                            "sklearn": {"logreg"|"knn"|"tree"|"constant": predictions},
                            "sklearn_proba_logreg": predict_proba rows (10 floats),
                            "torch": the MLP's output rows (10 floats)}

Every model takes the raw pixel values 0..16. The MLP is trained on X/16, and
that scaling is then baked into its first layer (weights divided by 16, exact
in floating point), so mlp.pt and mlp.onnx are plain Linear-ReLU-Linear graphs
(Gemm, Relu, Gemm in ONNX) that must be served raw pixels; "torch" holds their
outputs for the raw rows of "X". The accuracy of each model on the held-out
rows goes to stderr.
"""
import argparse
import json
import os
import sys

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def train_mlp(X, y, steps=300):
    torch.manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, t = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    for _ in range(steps):  # full-batch Adam
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), t)
        loss.backward()
        opt.step()
    with torch.no_grad():  # bake the /16 scaling into the first layer: raw pixels in
        net.fc1.weight /= 16.0
    return net.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory to write the models and heldout.json into")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    np.random.seed(0)
    torch.set_num_threads(1)  # same floating-point sums on every machine

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    models = {
        "logreg": LogisticRegression(max_iter=5000),
        # kd_tree: exact distance ties (integer pixels) are broken the same way
        # whatever the thread count or batch; brute force's order varies.
        "knn": KNeighborsClassifier(algorithm="kd_tree"),
        "tree": DecisionTreeClassifier(max_depth=3, random_state=0),
        "constant": DummyClassifier(strategy="most_frequent"),
    }
    heldout = {"X": Xte.tolist(), "y": yte.tolist(), "sklearn": {}}
    for name, model in models.items():
        model.fit(Xtr, ytr)
        pred = model.predict(Xte)
        heldout["sklearn"][name] = pred.tolist()
        joblib.dump(model, os.path.join(args.out, "sklearn_%s.joblib" % name))
        print("sklearn %-8s accuracy %.4f" % (name, np.mean(pred == yte)), file=sys.stderr)
    heldout["sklearn_proba_logreg"] = models["logreg"].predict_proba(Xte).tolist()

    net = train_mlp(Xtr, ytr)
    with torch.no_grad():
        out = net(torch.tensor(Xte, dtype=torch.float32))
    heldout["torch"] = out.tolist()
    print("torch   mlp      accuracy %.4f" % (out.argmax(1).numpy() == yte).mean(), file=sys.stderr)
    torch.jit.script(net).save(os.path.join(args.out, "mlp.pt"))
    torch.onnx.export(net, torch.zeros(1, 64), os.path.join(args.out, "mlp.onnx"), opset_version=13,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})

    with open(os.path.join(args.out, "heldout.json"), "w") as f:
        json.dump(heldout, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
