#!/usr/bin/env bash
# The offline demo DAG: the trained demo family (tiny OLMo-3 base + math, code and IF experts, shipped
# in demofamily/models), every merge method, vLLM (CPU) generation, EvalPlus / IFEval / AIME scoring,
# and results/demo/table1.{md,csv,json,png}. No GPU, no network. Then the regression check: the
# merges' fingerprints and the table are compared with the expected ones (config/demo_expected/);
# every merge that moved and every cell that moved beyond its noise band is listed; the exit status
# is 1 when any did.
# Extra arguments go to snakemake (e.g. -n for a dry run; with arguments the comparison is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
snakemake --cores all "$@"
if [ $# -eq 0 ]; then
  echo "report: results/demo/table1.md"
  rc=0
  python -m merges fingerprint-compare results/demo/fingerprints.json \
    config/demo_expected/fingerprints.json || rc=1
  python -m evals compare results/demo/table1.csv config/demo_expected/table1.csv \
    --noise-band config/demo_expected/band.csv || rc=1
  exit $rc
fi
