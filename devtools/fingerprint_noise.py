"""How far the same merge code moves its own fingerprints: every merge spec of a run merged again
under other torch thread counts, fingerprinted, and compared with the run's own merges.

    python -m devtools.fingerprint_noise results/demo --threads 1 3 [--workdir /tmp/fp-noise]

Prints, per merge and thread count, the largest relative change of a tensor's delta and how many
tensors differ in their bits; the fingerprint tolerance (merges.fingerprint_check.TOLERANCE) must sit
well above the largest figure and well below what a real bug moves.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from merges.fingerprint import fingerprint
from merges.fingerprint_check import relative_change


def merge_again(spec: Path, out: Path, threads: int) -> None:
    data = json.loads(spec.read_text()) | {"output": str(out), "force": True}
    tmp = out.with_suffix(".spec.json")
    tmp.write_text(json.dumps(data))
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "merges", "run", "--spec", str(tmp), "--quiet"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run's results folder (specs/ and models/)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fp-noise"))
    ap.add_argument("--only", nargs="*", help="merge ids (default: every spec)")
    args = ap.parse_args(argv)
    specs = sorted((args.run / "specs").glob("*.json"))
    if args.only:
        specs = [s for s in specs if s.stem in args.only]
    print("| merge | threads | largest relative change | tensors with other bits |")
    print("|---|---|---|---|")
    worst = 0.0
    for spec in specs:
        base = Path(json.loads(spec.read_text())["base"])
        ref = fingerprint(args.run / "models" / spec.stem, base)
        for t in args.threads:
            out = args.workdir / f"t{t}" / spec.stem
            out.parent.mkdir(parents=True, exist_ok=True)
            merge_again(spec, out, t)
            new = fingerprint(out, base)["tensors"]
            old = ref["tensors"]
            top = max(relative_change(new[n], old[n]) for n in new)
            bits = sum(new[n]["sha256"] != old[n]["sha256"] for n in new)
            worst = max(worst, top)
            print(f"| {spec.stem} | {t} | {top:.3g} | {bits} of {len(new)} |", flush=True)
    print(f"\nlargest relative change over all merges: {worst:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
