#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything SkinGPT-4 needs, on a machine that has only Python.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --test   # + pytest, playwright, peft (LoRA tests) and Debian's chromium for the browser test
# torch: the registry's regular build. The CPU-only wheel some machines keep locally cannot import
# torchvision (docs/installation.md); the regular build runs fine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.15.0"
TORCHVISION="torchvision==0.29.2"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH and $TORCHVISION (regular build; a few minutes)"
  pip install "$TORCH" "$TORCHVISION"
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
# Re-running is cheap: skip pip when this checkout's pyproject.toml was already installed with these extras.
stamp=".venv/.skingpt4-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras $(pwd)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import skingpt4" 2>/dev/null; then
  echo "[setup] skingpt4$extras already installed in .venv"
else
  echo "[setup] installing skingpt4$extras and its dependencies"
  pip install -e ".$extras"
  echo "$want" > "$stamp"
fi
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing Debian chromium for the browser test"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] WARNING: could not install chromium; the browser test will be skipped"
  else
    echo "[setup] WARNING: not root, cannot apt-get install chromium; the browser test will be skipped"
  fi
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers, timm, gradio; print("torch", torch.__version__, "transformers", transformers.__version__, "timm", timm.__version__, "gradio", gradio.__version__)')"
