"""Serve a scikit-learn model (joblib or pickle file) over the sloproxy RPC contract.

Outputs are JSON: --method predict sends the label as a JSON scalar (3, or
"cat"), --method predict_proba the class probabilities as a list of floats.
Items whose length the model rejects become item errors; the rest of the
batch is still answered.
"""
import os
import pickle
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "containers", "python"))
import sloproxy_models  # noqa: E402
from sloproxy_rpc import to_json  # noqa: E402


def load(path):
    if path.endswith((".pkl", ".pickle")):
        with open(path, "rb") as f:
            return pickle.load(f)
    import joblib
    return joblib.load(path)


def main():
    args = sloproxy_models.parse_args(__doc__, "sklearn", ("float64", "float32"), lambda ap: ap.add_argument(
        "--method", choices=("predict", "predict_proba"), default="predict", help="default predict"))
    method = getattr(load(args.model), args.method)

    def predict(inputs):
        # to_json here, not in the server, so that a string label is a JSON string too.
        return [to_json(y) for y in method(sloproxy_models.stack(inputs)).tolist()]

    sloproxy_models.serve(args, predict)


if __name__ == "__main__":
    main()
