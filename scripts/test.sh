#!/usr/bin/env bash
# The project's test command: sets up .venv and bubblewrap (scripts/setup.sh), installs mergekit (the
# parity test's peer) and olah (the hub tests' server, in .venv-hub), starts the single-node SLURM test
# cluster when running as root with apt-get (scripts/slurm-local.sh; MERGEEVAL_NO_SLURM=1 skips it),
# and runs pytest. Extra arguments go to pytest. pytest's exit code 5 (no tests) counts as success.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# mergekit and PEFT, the peers whose own code tests/test_mergekit_parity.py and tests/test_peft_parity.py
# run (PEFT also makes the adapters of tests/test_adapters.py): test dependencies, installed beside the
# stack without their dependency pins (they run with the project's torch and transformers).
if ! .venv/bin/python -c "import mergekit.merge, peft" 2>/dev/null; then
  .venv/bin/python -m pip install -q --no-deps mergekit==0.1.5 peft==0.21.2 accelerate==1.15.0 immutables==0.21 \
    || echo "warning: could not install mergekit; the parity test will say why"
fi
# olah, the self-hosted hub server of tests/test_hub.py: its own virtual environment .venv-hub (its
# dependencies clash with vLLM's pins), exactly scripts/olah-requirements.txt; reused when complete.
hub_stamp=.venv-hub/.setup-$(sha1sum scripts/olah-requirements.txt | cut -c1-12)
if [ ! -f "$hub_stamp" ]; then
  rm -rf .venv-hub
  { "${PYTHON:-python3}" -m venv .venv-hub \
    && .venv-hub/bin/python -m pip install -q -r scripts/olah-requirements.txt && touch "$hub_stamp"; } \
    || echo "warning: could not install olah into .venv-hub; the hub tests will say why"
fi
if [ -f "$hub_stamp" ]; then export MERGEEVAL_OLAH="$PWD/.venv-hub/bin/olah-cli"; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${MERGEEVAL_NO_SLURM:-0}" != 1 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    scripts/slurm-local.sh start || echo "warning: the local SLURM cluster did not start; its test will say why"
  else
    echo "note: not root or no apt-get: the SLURM integration test will be skipped (it says why)"
  fi
fi
source .venv/bin/activate
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi
exit "$rc"
