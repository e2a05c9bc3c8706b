#!/usr/bin/env bash
# The offline demo DAG: tiny OLMo-3 base + 3 experts, every merge method, vLLM (CPU) generation,
# EvalPlus / IFEval / AIME scoring, and results/demo/table1.{md,csv,json,png}. No GPU, no network.
# Extra arguments go to snakemake (e.g. -n for a dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
snakemake --cores all "$@"
echo "report: results/demo/table1.md"
