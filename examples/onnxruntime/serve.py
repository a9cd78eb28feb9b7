"""Serve an ONNX model with ONNX Runtime over the sloproxy RPC contract.

Items are stacked into an (n, d) array fed to the model's first input (or
--input); each item's row of the first output (or --output) is sent as JSON.
Uses the CUDAExecutionProvider when ONNX Runtime has it, else the CPU;
--device cpu forces the CPU.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "containers", "python"))
import sloproxy_models  # noqa: E402

ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(float16)": "float16"}


def add_args(ap):
    ap.add_argument("--input", help="model input to feed (default: the first)")
    ap.add_argument("--output", help="model output to send (default: the first)")
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto", help="default auto: CUDA when available")


def main():
    args = sloproxy_models.parse_args(__doc__, "onnxruntime", ("float32", "float64", "int32"), add_args)
    import onnxruntime as ort
    providers = ["CPUExecutionProvider"]
    if args.device == "auto" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(args.model, providers=providers)
    model_input = {i.name: i for i in session.get_inputs()}[args.input] if args.input else session.get_inputs()[0]
    dtype = ONNX_TYPES.get(model_input.type, args.input_type)  # feed the model's own element type
    outputs = [args.output] if args.output else None

    def predict(inputs):
        x = sloproxy_models.stack(inputs, dtype)
        return session.run(outputs, {model_input.name: x})[0].tolist()

    sloproxy_models.serve(args, predict)


if __name__ == "__main__":
    main()
