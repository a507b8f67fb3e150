#!/usr/bin/env bash
# The README's main job, on a fresh machine with only CPUs and Python: set up .venv (scripts/setup.sh; quick when
# it is already there), build the tiny random-weight model assets, generate
# the synthetic datasets, train step 1 (SKINCON concepts) then step 2 (Dermnet + notes, from the step-1
# checkpoint) with the tiny model, and show that the loss falls. A few minutes on 2 CPU cores.
#
#   bash scripts/main_job.sh                 # outputs under output/main_job/<time stamp>/
#   OUT=/tmp/job bash scripts/main_job.sh    # elsewhere (must not exist yet)
#
# The tiny model checks the plumbing (data -> model -> loss -> optimiser -> checkpoint -> step 2); it has random
# weights and is NOT a diagnostic model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then   # PYTHON=... runs with an interpreter you set up yourself
  echo "[main job] 0/4 environment: bash scripts/setup.sh (quick when .venv is already there)"
  bash scripts/setup.sh
fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { echo "[main job] $PY not found (PYTHON is set; unset it to let scripts/setup.sh build .venv)"; exit 1; }
SHARED="output/main_job"                          # tiny assets and synthetic data, reused by later runs
OUT="${OUT:-$SHARED/$(date +%Y%m%d-%H%M%S)}"       # this run's outputs
if [ -e "$OUT" ]; then echo "[main job] '$OUT' already exists; choose another OUT"; exit 1; fi
mkdir -p "$OUT"
export SKINGPT4_TINY_ASSETS="$SHARED/tiny_assets"
start=$(date +%s)

if [ ! -f "$SKINGPT4_TINY_ASSETS/eva_vit_g.pth" ]; then
  echo "[main job] 1/4 tiny model assets -> $SKINGPT4_TINY_ASSETS"
  "$PY" -m skingpt4.models.tiny --out "$SKINGPT4_TINY_ASSETS"
else
  echo "[main job] 1/4 reusing tiny model assets in $SKINGPT4_TINY_ASSETS"
fi
DATA="$SHARED/synthetic"
if [ ! -f "$DATA/prepared/skincon/filter_cap.json" ] || [ ! -f "$DATA/prepared/dermnet/filter_cap.json" ] \
    || [ ! -f "$DATA/prepared/notes/filter_cap.json" ]; then
  # --overwrite: a generation killed half-way leaves $DATA non-empty without the filter_cap.json files (each
  # written last in its folder), and make_synthetic.py refuses a non-empty --out without it.
  echo "[main job] 2/4 synthetic datasets -> $DATA"
  "$PY" data_prep/make_synthetic.py --out "$DATA" --no-stats --overwrite
else
  echo "[main job] 2/4 reusing synthetic datasets in $DATA"
fi

echo "[main job] 3/4 step 1: SKINCON concepts (train_configs/tiny_step1.yaml)"
"$PY" train.py --cfg-path train_configs/tiny_step1.yaml --options \
  datasets.skincon_concepts.storage="$DATA/prepared/skincon" run.output_dir="$OUT/step1" run.progress_bar=false

echo "[main job] 4/4 step 2: Dermnet + notes from the step-1 projection (train_configs/tiny_step2.yaml)"
"$PY" train.py --cfg-path train_configs/tiny_step2.yaml --options \
  model.ckpt="$OUT/step1/checkpoint_last.pth" datasets.dermnet.storage="$DATA/prepared/dermnet" \
  datasets.skin_notes.storage="$DATA/prepared/notes" run.output_dir="$OUT/step2" run.progress_bar=false

"$PY" - "$OUT" "$(( $(date +%s) - start ))" <<'PYEOF'
import sys
from pathlib import Path

from skingpt4.runners.metrics import read_metrics

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
print("\n==================== main job summary ====================")
falling = True
for step in ("step1", "step2"):
    records = read_metrics(out / step / "metrics.jsonl")
    losses = [r["loss"] for r in records]
    # Mean of the first and of the last three records (5 steps each): single batches are noisy.
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    falling &= end < start
    rate = sum(r["samples_per_s"] for r in records) / len(records)
    print(f"{step}: mean loss of steps 1-{records[2]['step']}: {start:.4f} -> of the last 15 steps: {end:.4f} "
          f"({records[-1]['step']} steps, {rate:.1f} samples/s)")
    print("       losses: " + " ".join(f"{loss:.3f}" for loss in losses))
    print(f"       checkpoint {out / step / 'checkpoint_last.pth'}, curve {out / step / 'loss_curve.png'}")
print(f"loss fell in both steps: {'yes' if falling else 'NO'}; total time {seconds} s")
print("The tiny model has random weights and ~0.4M parameters: this run checks the training plumbing")
print("(data -> frozen encoders -> projection -> LLM loss -> AdamW -> checkpoints -> step 2).")
print("It is NOT a diagnostic model and says nothing about skin disease.")
sys.exit(0 if falling else 1)
PYEOF
