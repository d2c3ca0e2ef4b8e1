#!/usr/bin/env bash
# Create the peer venv (.venv-bench, gitignored via `.venv-*/`) that runs TRL for bench/sft_bench.py
# and bench/dpo_bench.py.
# TRL is never a dependency of tunesmith; it lives only here.
#
# torch is installed first and pinned: `pip install torch==2.13.0` takes the local CPU build on
# the project machines, whereas an unpinned torch would pull a multi-GB CUDA build.
#
# Usage: bash bench/setup_peer_env.sh [VENV_DIR]      (default: .venv-bench in the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-bench}"
PY="${PYTHON:-python3}"

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TRL_VERSION="${TRL_VERSION:-1.16.0}"
PEFT_VERSION="${PEFT_VERSION:-0.21.2}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.23.0}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "torch==${TORCH_VERSION}"
"$VENV/bin/pip" install --quiet "trl==${TRL_VERSION}" "peft==${PEFT_VERSION}" \
  "transformers==${TRANSFORMERS_VERSION}" datasets accelerate
# The installed torch must still be the pinned CPU build (nothing above may have replaced it).
"$VENV/bin/python" - <<PYEOF
import torch, trl, peft, transformers
assert torch.__version__.startswith("${TORCH_VERSION}"), torch.__version__
assert torch.version.cuda is None, f"a CUDA build of torch was installed ({torch.__version__}); expected the CPU build"
print("peer venv ready:", "torch", torch.__version__, "| trl", trl.__version__, "| peft", peft.__version__,
      "| transformers", transformers.__version__)
PYEOF
echo "run: python bench/sft_bench.py --python-peer $VENV/bin/python"
echo "     python bench/dpo_bench.py --python-peer $VENV/bin/python"
