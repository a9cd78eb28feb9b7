"""Code shared by the example model containers (examples/*/serve.py).

Each example parses its flags with parse_args, loads its model, and hands a
predict function to serve. Flags win over the environment; a flag left out
falls back to SLOPROXY_RPC_ADDR, SLOPROXY_MODEL_NAME, SLOPROXY_MODEL_VERSION
and SLOPROXY_MODEL_PATH.
"""
import argparse
import os

import sloproxy_rpc

NUMPY_TYPES = {"i": "int32", "f": "float32", "d": "float64"}  # array typecode -> numpy dtype


def parse_args(description, default_name, input_types=("float32",), add_args=None, argv=None):
    """Flags common to all examples; add_args(parser) adds an example's own."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("SLOPROXY_MODEL_PATH"), metavar="PATH",
                    help="model file or directory (default $SLOPROXY_MODEL_PATH)")
    ap.add_argument("--addr", help="host:port to listen on (default $SLOPROXY_RPC_ADDR, else 0.0.0.0:7000)")
    ap.add_argument("--name", help="model name sent in HELLO (default $SLOPROXY_MODEL_NAME, else %s)" % default_name)
    ap.add_argument("--version", help="model version sent in HELLO (default $SLOPROXY_MODEL_VERSION, else 1)")
    ap.add_argument("--max-batch", type=int, default=0, help="most items per request (default 0: no own limit)")
    ap.add_argument("--input-type", choices=input_types, default=input_types[0],
                    help="input type announced in HELLO (default %s)" % input_types[0])
    ap.add_argument("--concurrent", action="store_true",
                    help="let several batches run the model at once (default: one batch at a time)")
    if add_args:
        add_args(ap)
    args = ap.parse_args(argv)
    if not args.model:
        ap.error("--model PATH (or SLOPROXY_MODEL_PATH) is required")
    args.default_name = default_name
    return args


def serve(args, predict):
    """Serve predict with the settings of parse_args; returns when stopped."""
    sloproxy_rpc.serve(predict, args.input_type, model_name=args.name, model_version=args.version,
                       addr=args.addr, max_batch=args.max_batch, concurrent=args.concurrent,
                       default_name=args.default_name)


def stack(inputs, dtype=None):
    """The batch of numeric items as an (n, d) numpy array, converted to dtype
    when given. Raises ValueError when items differ in length; the server then
    runs each item alone, so only the items the model rejects fail."""
    import numpy as np
    rows = [np.frombuffer(x, dtype=NUMPY_TYPES[x.typecode]) for x in inputs]
    x = np.stack(rows)  # ValueError for rows of different lengths
    return x if dtype is None else x.astype(dtype, copy=False)
