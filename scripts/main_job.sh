#!/usr/bin/env bash
# The README's main job, on a fresh machine with only CPUs and Python: set up .venv (scripts/setup.sh; quick when
# it is already there), build the tiny pretrained model assets (cached), generate the synthetic datasets
# (reused when unchanged), train step 1 (SKINCON concepts) then step 2 (Dermnet + notes, from the step-1
# checkpoint), evaluate on the held-out synthetic cases and print a summary that says whether the pipeline
# learned (exit status 1 when it did not). About 3 minutes on 2 CPU cores once .venv exists.
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
OUT="${OUT:-output/main_job/$(date +%Y%m%d-%H%M%S)}"   # this run's outputs
if [ -e "$OUT" ]; then echo "[main job] '$OUT' already exists; choose another OUT"; exit 1; fi
mkdir -p "$OUT"
start=$(date +%s)

echo "[main job] 1/5 tiny pretrained assets -> $SKINGPT4_TINY_ASSETS (kept when the recipe is unchanged)"
"$PY" -m skingpt4.models.tiny --out "$SKINGPT4_TINY_ASSETS"

echo "[main job] 2/5 synthetic datasets -> $DATA (kept when unchanged)"
"$PY" data_prep/make_synthetic.py --out "$DATA" --no-stats --reuse

# Both steps: frozen features cached once (deterministic eval transform), 16 samples per step, lr 1e-2 (a tiny
# LLM; the paper's 1e-4 is for Llama-2-13B).
COMMON=(run.cache_frozen_features=true run.batch_size_train=16 run.init_lr=1e-2 run.min_lr=1e-3 run.warmup_steps=10
        run.log_freq=10 run.progress_bar=false run.tensorboard=false)
echo "[main job] 3/5 step 1: SKINCON concepts (train_configs/tiny_step1.yaml)"
"$PY" train.py --cfg-path train_configs/tiny_step1.yaml --options "${COMMON[@]}" run.max_epoch=5 \
  run.iters_per_epoch=100 datasets.skincon_concepts.storage="$DATA/prepared/skincon" \
  datasets.skincon_concepts.vis_processor.name=blip2_image_eval run.output_dir="$OUT/step1" > "$OUT/step1.log" 2>&1 \
  || { tail -20 "$OUT/step1.log"; exit 1; }
tail -1 "$OUT/step1.log"

echo "[main job] 4/5 step 2: Dermnet + notes from the step-1 projection (train_configs/tiny_step2.yaml)"
"$PY" train.py --cfg-path train_configs/tiny_step2.yaml --options "${COMMON[@]}" run.max_epoch=2 \
  run.iters_per_epoch=100 model.ckpt="$OUT/step1/checkpoint_last.pth" \
  datasets.dermnet.storage="$DATA/prepared/dermnet" datasets.dermnet.vis_processor.name=blip2_image_eval \
  datasets.skin_notes.storage="$DATA/prepared/notes" datasets.skin_notes.vis_processor.name=blip2_image_eval \
  run.output_dir="$OUT/step2" > "$OUT/step2.log" 2>&1 || { tail -20 "$OUT/step2.log"; exit 1; }
tail -1 "$OUT/step2.log"

echo "[main job] 5/5 evaluation on the held-out cases ($DATA/cases) and summary"
status=0
"$PY" -m skingpt4.evaluation.learning --run "$OUT" --data "$DATA" --seconds "$(( $(date +%s) - start ))" \
  | tee "$OUT/summary.txt" || status=$?
if [ "$status" -eq 0 ]; then
  cp "$OUT/step2/checkpoint_last.pth" "$SKINGPT4_TINY_ASSETS/skingpt4_tiny.pth"
  echo "published the step-2 checkpoint as $SKINGPT4_TINY_ASSETS/skingpt4_tiny.pth; chat with it:"
  echo "  $PY demo.py --cfg-path eval_configs/skingpt4_tiny.yaml"
fi
echo "[main job] done in $(( $(date +%s) - start )) s; outputs in $OUT"
exit "$status"
