#!/usr/bin/env bash
# Device-machine check (CUDA): CPU/GPU parity of every method on tiny models, then per-layer merge
# times on OLMo-3-7B-shaped layers and whole-model merges (`merges bench`). Results go to $OUT
# (or results/gpu-check).
set -uo pipefail
out=${OUT:-results/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q tests/test_cuda_parity.py -p no:cacheprovider 2>&1 | tail -15 | tee "$out/parity.txt"
python3 -m merges bench-layers --workdir /tmp/bench-layers --layers 1 --device cuda \
  --methods "${METHODS:-task_arithmetic iso_c:float32 iso_c actmat actmat:float32:solver=fp32_pinv tsv:float32 tsv}" 2>&1 \
  | grep -v "^INFO" | tee "$out/layer_times.txt"
# Whole-model merges beside the I/O floor (and mergekit when installed). Full depth (32 blocks)
# needs ~75 GB of disk for base + 3 experts + output; LAYERS blocks fit the device machine's disk.
python3 -m merges bench --workdir /tmp/bench --layers "${LAYERS:-12}" --device cuda \
  --methods "${BENCH_METHODS:-task_arithmetic average tsv iso_c regmean actmat ties dare iso_cts ace}" \
  --json "$out/bench.json" 2>&1 | grep -v "^INFO" | tee "$out/bench.txt"
