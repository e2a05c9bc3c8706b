# Sourced by scripts/setup.sh and scripts/lock.sh: sets torch_cpu_source to the uv flags that find
# torch's CPU build (not on PyPI): a local wheel folder named by pip's find-links when it holds the
# locked wheel, else PyTorch's CPU index. Expects $1: a python whose pip reads the machine's config.
torch_cpu_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
for d in ${PIP_FIND_LINKS:-} $("$1" -m pip config get global.find-links 2>/dev/null || true); do
  if compgen -G "$d/torch-2.13.0+cpu-*.whl" >/dev/null; then torch_cpu_source=(--find-links "$d"); fi
done
