#!/usr/bin/env bash
# Create .venv and install mindgap with its dev tools. Safe to run again.
# torch is installed first and pinned: an unpinned torch pulls a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "mindgap installed in .venv ($(.venv/bin/python --version))"
