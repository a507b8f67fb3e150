#!/usr/bin/env bash
# The README's main job, on a fresh machine with only CPUs and Python: set up .venv (scripts/setup.sh; quick when
# it is already there), build the tiny pretrained model assets (cached), generate the synthetic datasets
# (reused when unchanged), train step 1 (SKINCON concepts) then step 2 (Dermnet + notes, from the step-1
# checkpoint), evaluate on the held-out synthetic cases beside trivial pixel baselines (skingpt4/tiny/baselines.py)
# and print a summary that says whether the pipeline learned (exit status 1 when it did not: the checks are
# relative to the untrained projection, the baselines and chance, with bootstrap intervals over the cases).
# About 3 minutes on 2 CPU cores once .venv exists. The ablation table: python -m skingpt4.ablations.
#
#   bash scripts/main_job.sh                 # run outputs under output/main_job/<time stamp>/
#   OUT=/tmp/job bash scripts/main_job.sh    # elsewhere (must not exist yet)
#
# Shared between runs, at the places every tiny config reads by default: the assets in tiny_assets/ (or
# $SKINGPT4_TINY_ASSETS) and the data in data/synthetic/ (or $DATA). When the checks pass, the step-2 checkpoint
# is published as tiny_assets/skingpt4_tiny.pth, which the tiny chat, demo and evaluation configs load.
# The tiny model shows that the pipeline learns on a synthetic world; it is NOT a diagnostic model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then   # PYTHON=... runs with an interpreter you set up yourself
  echo "[main job] 0/5 environment: bash scripts/setup.sh (quick when .venv is already there)"
  bash scripts/setup.sh
fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { echo "[main job] $PY not found (PYTHON is set; unset it to let scripts/setup.sh build .venv)"; exit 1; }
export SKINGPT4_TINY_ASSETS="${SKINGPT4_TINY_ASSETS:-tiny_assets}"
# The tiny model's matrices are too small to gain from several threads; one thread per process is as fast on
# an idle machine and much faster on a busy one (no spin-waiting). Set OMP_NUM_THREADS yourself to change it.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
DATA="${DATA:-data/synthetic}"
export SKINGPT4_SYNTHETIC_DATA="$DATA"   # where the tiny configs read the synthetic data
OUT="${OUT:-output/main_job/$(date +%Y%m%d-%H%M%S)}"   # this run's outputs
if [ -e "$OUT" ]; then echo "[main job] '$OUT' already exists; choose another OUT"; exit 1; fi
mkdir -p "$OUT"
start=$(date +%s)

echo "[main job] 1/5 tiny pretrained assets -> $SKINGPT4_TINY_ASSETS (kept when the recipe is unchanged)"
"$PY" -m skingpt4.tiny --out "$SKINGPT4_TINY_ASSETS"

echo "[main job] 2/5 synthetic datasets -> $DATA (kept when unchanged)"
"$PY" -m data_prep.make_synthetic --out "$DATA" --no-stats --reuse

# The recipe is in the configs (train_configs/main_job*.yaml, eval_configs/main_job.yaml); this script only
# sequences the steps and says where this run's files go.
echo "[main job] 3/5 step 1: SKINCON concepts (train_configs/main_job_step1.yaml)"
"$PY" train.py --cfg-path train_configs/main_job_step1.yaml --options run.output_dir="$OUT/step1" \
  > "$OUT/step1.log" 2>&1 || { tail -20 "$OUT/step1.log"; exit 1; }
tail -1 "$OUT/step1.log"

echo "[main job] 4/5 step 2: Dermnet + notes from the step-1 projection (train_configs/main_job_step2.yaml)"
"$PY" train.py --cfg-path train_configs/main_job_step2.yaml --options model.ckpt="$OUT/step1/checkpoint_last.pth" \
  run.output_dir="$OUT/step2" > "$OUT/step2.log" 2>&1 || { tail -20 "$OUT/step2.log"; exit 1; }
tail -1 "$OUT/step2.log"

echo "[main job] 5/5 evaluation on the held-out cases ($DATA/cases, eval_configs/main_job.yaml) and summary"
status=0
"$PY" -m skingpt4.tiny.learning --run "$OUT" --data "$DATA" --cfg-path eval_configs/main_job.yaml \
  --seconds "$(( $(date +%s) - start ))" \
  | tee "$OUT/summary.txt" || status=$?
if [ "$status" -eq 0 ]; then
  cp "$OUT/step2/checkpoint_last.pth" "$SKINGPT4_TINY_ASSETS/skingpt4_tiny.pth"
  echo "published the step-2 checkpoint as $SKINGPT4_TINY_ASSETS/skingpt4_tiny.pth; chat with it:"
  echo "  $PY demo.py --cfg-path eval_configs/skingpt4_tiny.yaml"
fi
echo "[main job] done in $(( $(date +%s) - start )) s; outputs in $OUT"
exit "$status"
