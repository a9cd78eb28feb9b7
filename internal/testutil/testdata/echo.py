"""A Python model container that answers every input with itself: the
Python counterpart of examples/noop, for overhead benchmarks.
Run: /usr/bin/python3 echo.py (listens on $SLOPROXY_RPC_ADDR)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "containers", "python"))
import sloproxy_rpc  # noqa: E402

if __name__ == "__main__":
    sloproxy_rpc.serve(lambda inputs: inputs, input_type="bytes", model_name="echo")
