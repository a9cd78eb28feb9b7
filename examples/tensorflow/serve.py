"""Serve a TensorFlow SavedModel (tf.saved_model.load) over the sloproxy RPC contract.

Items are stacked into an (n, d) tensor passed to a serving signature
(--signature, default serving_default) as its only input (or --input); each
item's row of the signature's output (--output, default the first by name) is
sent as JSON. TensorFlow places the model on a GPU when it sees one.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "containers", "python"))
import sloproxy_models  # noqa: E402


def add_args(ap):
    ap.add_argument("--signature", default="serving_default", help="default serving_default")
    ap.add_argument("--input", help="signature input to feed (default: its only input)")
    ap.add_argument("--output", help="signature output to send (default: the first by name)")


def main():
    args = sloproxy_models.parse_args(__doc__, "tensorflow", ("float32", "float64", "int32"), add_args)
    import tensorflow as tf
    fn = tf.saved_model.load(args.model).signatures[args.signature]
    specs = fn.structured_input_signature[1]
    if not args.input and len(specs) != 1:
        sys.exit("signature %s has inputs %s: choose one with --input" % (args.signature, sorted(specs)))
    name = args.input or next(iter(specs))
    dtype = specs[name].dtype.as_numpy_dtype

    def predict(inputs):
        out = fn(**{name: tf.constant(sloproxy_models.stack(inputs, dtype))})
        return out[args.output or sorted(out)[0]].numpy().tolist()

    sloproxy_models.serve(args, predict)


if __name__ == "__main__":
    main()
