#!/usr/bin/env bash
# Creates .venv with exactly the packages of a lock file (locks/cpu.txt: PyTorch and vLLM CPU builds;
# locks/gpu.txt: their CUDA builds; scripts/lock.sh writes both) and the project on top, and installs
# bubblewrap, the sandbox HumanEval's model-written code runs in (as root with apt-get; otherwise it
# says how). Usage: scripts/setup.sh [cpu|gpu]   (default: cpu). Idempotent: a complete .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}
case "$flavour" in cpu | gpu) ;; *) echo "usage: scripts/setup.sh [cpu|gpu]" >&2 && exit 2 ;; esac
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
stamp=.venv/.setup-$flavour-$(sha1sum pyproject.toml "locks/$flavour.txt" scripts/setup.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
[ -d .venv ] || "$py" -m venv .venv
# uv installs the lock exactly: every pinned version with its hashes, and removes what the lock lacks
uv_version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "locks/$flavour.txt")
.venv/bin/python -m pip install -q "uv==$uv_version"
sources=()
if [ "$flavour" = cpu ]; then
  source scripts/lib/torch_cpu_source.sh .venv/bin/python
  sources=("${torch_cpu_source[@]}")
fi
.venv/bin/uv pip sync -q --python .venv/bin/python --require-hashes "${sources[@]}" "locks/$flavour.txt"
# the project itself, editable, on top of the lock (its dependencies are the lock)
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
rm -f .venv/.setup-*
touch "$stamp"
