#!/usr/bin/env bash
# Create .venv with tunesmith and its test dependencies, on a fresh machine with no GPU.
# torch is pinned here (and only here) to the CPU build that lies on this machine's disk;
# the package itself asks for a range (torch>=2.5), so an unpinned install would pull CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,rich]"
