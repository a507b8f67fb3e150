#!/usr/bin/env bash
# The GPU acceptance run in one command (docs/performance.md): full-size SkinGPT-4 with random weights on one GPU,
# every speed and memory figure into $OUT (JSON + table + log), within about 8 minutes.
#
# Where this repository's pinned packages are installed (scripts/setup.sh, environment.yml):
#     bash scripts/gpu_acceptance.sh
# On a machine that has torch + CUDA but not the project's pure-Python pins (and no network), first fetch them
# where PyPI is reachable -- `bash scripts/gpu_wheels.sh` writes .whl/ (~60 MB, git-ignored) -- carry .whl/ along
# and this script installs them into /tmp/site before the run.
#
# Extra arguments go to benchmarks/gpu_acceptance.py, e.g. a rerun of what was skipped:
#     bash scripts/gpu_acceptance.sh --sections compiled
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output/acceptance}"
BUDGET_S="${BUDGET_S:-420}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,power.limit --format=csv \
  >"$OUT/nvidia_smi.csv" 2>&1 || true
timeout --signal=INT $(( ${BUDGET_S%.*} + 90 )) "$PYTHON" benchmarks/gpu_acceptance.py --arch full --out "$OUT" \
  --budget-s "$BUDGET_S" "$@" 2>&1 | tee "$OUT/acceptance_log.txt"
exit "${PIPESTATUS[0]}"
