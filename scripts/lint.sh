#!/usr/bin/env bash
# The habits CI enforces before the tests: ruff's lint rules and formatting (pyproject [tool.ruff]),
# and the import-layer contracts of DESIGN.md (pyproject [tool.importlinter]). Fix with
# `.venv/bin/ruff check --fix . && .venv/bin/ruff format .`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet src tests bench scripts examples
.venv/bin/ruff format --check --quiet src tests bench scripts examples
if out=$(.venv/bin/lint-imports --no-cache 2>&1); then
  echo "$out" | grep -E "KEPT|Contracts:"
else
  echo "$out"; exit 1
fi
