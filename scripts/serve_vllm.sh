#!/usr/bin/env bash
# Serve an exported SkinGPT-4 (python -m skingpt4.export --out DIR) with vLLM's OpenAI-compatible HTTP server,
# bound to 127.0.0.1 (local by default, like the demo). Needs a CUDA GPU and vLLM, best in its own environment
# (vLLM pins its own torch): python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm  (docs/scaling.md).
#   bash scripts/serve_vllm.sh DIR                               # port 8000, served as "skingpt4"
#   PORT=8001 bash scripts/serve_vllm.sh DIR --tensor-parallel-size 8   # extra arguments go to `vllm serve`
#   VLLM=.venv-vllm/bin/vllm bash scripts/serve_vllm.sh DIR
# Then: python -m skingpt4.chat.remote --image photo.jpg --clinical
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "error: usage: bash scripts/serve_vllm.sh EXPORT_DIR [vllm serve arguments]; make EXPORT_DIR with python -m skingpt4.export" >&2
  exit 2
fi
DIR="$1"; shift
if [ ! -f "$DIR/skingpt4_export.json" ]; then
  echo "error: '$DIR' is not a SkinGPT-4 export (no skingpt4_export.json); make one with python -m skingpt4.export" >&2
  exit 2
fi
VLLM="${VLLM:-vllm}"
if ! command -v "$VLLM" >/dev/null 2>&1; then
  echo "error: vLLM is not installed ('$VLLM' not found); install it (pip install vllm, a CUDA GPU is needed) or set VLLM=/path/to/vllm" >&2
  exit 2
fi
# Never reach a model hub: everything comes from DIR.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
exec "$VLLM" serve "$DIR" --host 127.0.0.1 --port "${PORT:-8000}" --served-model-name skingpt4 \
  --limit-mm-per-prompt '{"image": 1}' --generation-config vllm "$@"
