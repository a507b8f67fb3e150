#!/usr/bin/env bash
# Fetch the pure-Python packages the acceptance run needs beyond torch (at this repository's pins) plus
# bitsandbytes, as wheels into .whl/ (git-ignored), for a GPU machine that has torch and CUDA but no network.
# Needs PyPI. Python 3.12 / x86-64 Linux wheels by default (PY_VERSION=3.11 etc. for another Python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION="${PY_VERSION:-3.12}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  transformers==5.23.0 timm==1.0.31 omegaconf==2.4.0 webdataset==1.0.2 braceexpand bitsandbytes
du -sh .whl && ls .whl
