#!/usr/bin/python3
"""Generate the test model and reference outputs for examples/onnx.

Run from this directory with Debian's Python (it has torch and onnx):

    /usr/bin/python3 make_mlp.py

Writes
  - mlp.onnx: an MLP 64 -> 32 -> ReLU -> 10 with the input scaled by 1/16,
    dynamic batch axis, opset 13; torch exports nn.Linear as Gemm, so the
    graph is Constant, Div, Gemm, Relu, Gemm;
  - mlp_matmul.onnx: the same weights written as x @ W.T + b, which exports
    as MatMul + Add (Div, MatMul, Add, Relu, MatMul, Add);
  - mlp_expected.json: the inputs and torch's outputs (the same for both).
"""
import json

import torch

IN, HIDDEN, OUT = 64, 32, 10


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(IN, HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN, OUT),
        )

    def forward(self, x):
        # Pixel values 0..16 (as in sklearn's 8x8 digits) scaled to 0..1.
        return self.net(x / 16.0)


class MLPMatMul(torch.nn.Module):
    """MLP's computation with explicit matmuls, so that it exports as MatMul + Add."""

    def __init__(self, mlp):
        super().__init__()
        first, _, second = mlp.net
        self.w1 = torch.nn.Parameter(first.weight.detach().t().contiguous())
        self.b1 = torch.nn.Parameter(first.bias.detach().clone())
        self.w2 = torch.nn.Parameter(second.weight.detach().t().contiguous())
        self.b2 = torch.nn.Parameter(second.bias.detach().clone())

    def forward(self, x):
        h = torch.relu(torch.matmul(x / 16.0, self.w1) + self.b1)
        return torch.matmul(h, self.w2) + self.b2


def export(model, example, path):
    torch.onnx.export(
        model,
        example,
        path,
        opset_version=13,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    import onnx

    m = onnx.load(path)
    onnx.checker.check_model(m)
    return [n.op_type for n in m.graph.node]


def main():
    torch.manual_seed(0)
    model = MLP().eval()

    # Inputs: a few integer "pixel" vectors plus random reals, incl. negatives.
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 17, (5, IN), generator=gen).float()
    reals = torch.randn(3, IN, generator=gen) * 8.0
    inputs = torch.cat([pixels, torch.zeros(1, IN), reals])

    with torch.no_grad():
        outputs = model(inputs)
        mm = MLPMatMul(model).eval()
        diff = (mm(inputs) - outputs).abs().max().item()
        assert diff < 1e-5, diff
        ops = export(model, inputs[:1], "mlp.onnx")
        mm_ops = export(mm, inputs[:1], "mlp_matmul.onnx")

    doc = {
        "torch": torch.__version__,
        "opset": 13,
        "ops": {"mlp.onnx": ops, "mlp_matmul.onnx": mm_ops},
        "input_width": IN,
        "output_width": OUT,
        "inputs": inputs.tolist(),
        "outputs": outputs.tolist(),
    }
    # One key per line and one vector per line: small, readable diffs.
    with open("mlp_expected.json", "w") as f:
        f.write("{\n")
        for i, (key, value) in enumerate(doc.items()):
            end = ",\n" if i < len(doc) - 1 else "\n"
            if key in ("inputs", "outputs"):
                rows = ",\n  ".join(json.dumps(row) for row in value)
                f.write(f' "{key}": [\n  {rows}\n ]{end}')
            else:
                f.write(f" {json.dumps(key)}: {json.dumps(value)}{end}")
        f.write("}\n")
    print("mlp.onnx:", ops)
    print("mlp_matmul.onnx:", mm_ops)


if __name__ == "__main__":
    main()
