#!/usr/bin/env bash
# Offline demo: builds tiny OLMo-3 base + 3 experts and merges them with every method (CPU, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=.venv/bin/python
out=results/demo-merges
$py -m merges make-tiny --output "$out/models"
for method in $($py -c "from merges.registry import methods; print(' '.join(m for m, x in methods().items() if not x.needs_stats))"); do
  $py -m merges run --method "$method" --base "$out/models/base" \
    --expert "$out/models/math" --expert "$out/models/code" --expert "$out/models/if" \
    --output "$out/merged/$method" --force --quiet
done
for e in math code if; do
  $py -m merges stats --model "$out/models/$e" --prompts tests/data/calibration_prompts.jsonl \
    --output "$out/stats/$e" --max-tokens 64 --force
done
$py -m merges run --method regmean --base "$out/models/base" \
  --expert "$out/models/math" --expert "$out/models/code" --expert "$out/models/if" \
  --stats "$out/stats/math" --stats "$out/stats/code" --stats "$out/stats/if" \
  --output "$out/merged/regmean" --force --quiet
echo "merged folders (each with merge.json) are under $out/merged"
