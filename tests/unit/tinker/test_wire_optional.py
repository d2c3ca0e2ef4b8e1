"""tunesmith.tinker.wire without the optional ``tinker`` SDK: the module imports, JSON bodies
decode, and a protobuf body gets a WireError saying what the server lacks."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
sys.modules["tinker"] = None  # import tinker -> ImportError, as if not installed
sys.modules["zstandard"] = None
import tunesmith, tunesmith.tinker.wire as w
doc = {"model_id": "m", "forward_backward_input": {"loss_fn": "cross_entropy", "data": [
    {"model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
     "loss_fn_inputs": {"weights": {"data": [0.5, 1.0], "dtype": "float32"}}}]}}
r = w.decode_forward_backward(json.dumps(doc).encode(), "application/json")
print(r.data[0].tokens, r.data[0].loss_fn_inputs["weights"].tolist(), r.seq_id)
for ct, enc in (("application/x-protobuf", None), ("application/json", "zstd")):
    try:
        w.decode_forward_backward(b"x", ct, enc)
    except w.WireError as e:
        print(e.field, "|", e)
"""


def test_imports_and_decodes_json_without_tinker():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[1, 2] [0.5, 1.0] 0"
    assert lines[1] == "Content-Type | Content-Type: protobuf bodies need the tinker package on the server"
    assert (
        lines[2]
        == "Content-Encoding | Content-Encoding: zstd bodies need the zstandard package on the server"
    )
