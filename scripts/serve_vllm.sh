#!/usr/bin/env bash
# Serve a SkinGPT-4 export for vLLM (python -m skingpt4.export --target vllm --out DIR) with vLLM's OpenAI-compatible
# HTTP server, bound to 127.0.0.1 (local by default, like the demo): the plain LLM in DIR/llm, prompt embeddings on,
# under the export's served model name (the client checks it). Needs a CUDA GPU and vLLM in its own environment
# (vLLM pins its own torch and transformers < 5): python -m venv .venv-vllm && .venv-vllm/bin/pip install '.[serve]'
# or pip install 'vllm>=0.11.1,<0.35' (docs/scaling.md).
#   bash scripts/serve_vllm.sh DIR                                      # port 8000
#   PORT=8001 bash scripts/serve_vllm.sh DIR --tensor-parallel-size 2   # extra arguments go to `vllm serve`
#   VLLM=.venv-vllm/bin/vllm bash scripts/serve_vllm.sh DIR
# Then: python -m skingpt4.chat.remote --server http://127.0.0.1:8000/v1 --export-dir DIR --image photo.jpg --clinical
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "error: usage: bash scripts/serve_vllm.sh EXPORT_DIR [vllm serve arguments]; make EXPORT_DIR with python -m skingpt4.export --target vllm" >&2
  exit 2
fi
DIR="$1"; shift
MANIFEST="$DIR/skingpt4_export.json"
NAME="$(sed -n 's/^ *"served_model_name": "\(skingpt4-[0-9a-f]*\)".*/\1/p' "$MANIFEST" 2>/dev/null || true)"
if [ -z "$NAME" ] || [ ! -d "$DIR/llm" ]; then
  echo "error: '$DIR' is not a --target vllm export (no served_model_name in skingpt4_export.json or no llm/); make one with python -m skingpt4.export --target vllm" >&2
  exit 2
fi
VLLM="${VLLM:-vllm}"
if ! command -v "$VLLM" >/dev/null 2>&1; then
  echo "error: vLLM is not installed ('$VLLM' not found); install it (pip install 'vllm>=0.11.1,<0.35', a CUDA GPU is needed) or set VLLM=/path/to/vllm" >&2
  exit 2
fi
# Never reach a model hub: everything comes from DIR.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
exec "$VLLM" serve "$DIR/llm" --host 127.0.0.1 --port "${PORT:-8000}" --served-model-name "$NAME" \
  --enable-prompt-embeds --generation-config vllm "$@"
