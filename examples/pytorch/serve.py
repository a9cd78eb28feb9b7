"""Serve a TorchScript model (torch.jit.save file) over the sloproxy RPC contract.

Float32 items are stacked into an (n, d) tensor; each item's output row is
sent as a JSON list of floats. Runs on CUDA when torch sees a GPU, else on
the CPU; --device forces one.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "containers", "python"))
import sloproxy_models  # noqa: E402


def main():
    args = sloproxy_models.parse_args(__doc__, "pytorch", ("float32",), lambda ap: ap.add_argument(
        "--device", help="torch device, e.g. cpu or cuda:0 (default cuda when available, else cpu)"))
    import numpy as np
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = torch.jit.load(args.model, map_location=device).eval()

    def predict(inputs):
        x = torch.from_numpy(sloproxy_models.stack(inputs, np.float32)).to(device)
        with torch.no_grad():
            return model(x).cpu().tolist()  # Python floats: JSON repr round-trips float32

    sloproxy_models.serve(args, predict)


if __name__ == "__main__":
    main()
