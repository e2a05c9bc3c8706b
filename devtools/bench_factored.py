"""Dense vs exact factored merge of LoRA experts at OLMo-3-7B widths: time and peak memory per block.

    python -m devtools.bench_factored [--methods actmat,tsv,cart,ace,iso_c,iso_cts] [--rank 16] [--experts 3]

Each (method, shape, path) runs in a fresh subprocess: T random factor pairs (B_t [m, r] fp64,
A_t [r, n] fp64, Δ_t entries ≈ 1e-3); the dense path gets the stack of B_t A_t in fp32 with
factor_dtype float64, as the engine gives it, the factored path the factors. Forming the stack is
not timed. A small merge of the same method first takes the library warm-up. Peak memory is
ru_maxrss after the merge minus ru_maxrss before it (the inputs allocated without temporaries, so
the high-water mark before equals the resident set; `hwm_gap` reports any difference): what the
merge adds above its inputs. The factored result is compared with the dense one (relative
Frobenius difference). Each method runs with its default parameters, except those in PARAMS
(Iso-C and Iso-CTS: `rank: numerical`, the variant that has a factored path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
METHODS = "actmat,tsv,cart,ace,iso_c,iso_cts"
PARAMS = {"iso_c": {"rank": "numerical"}, "iso_cts": {"rank": "numerical"}}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _factors(m: int, n: int, rank: int, experts: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(experts):
        scale = 1e-3 * (0.8, 1.0, 1.25)[t % 3] / rank**0.5
        b = torch.randn(m, rank, generator=g, dtype=torch.float64) * scale
        a = torch.randn(rank, n, generator=g, dtype=torch.float64)
        out.append((b, a))
    return out


def _task(method: str, path: str, factors, shape):
    """The merge problem as the engine hands it to the method's dense or factored fn."""
    import torch

    from merges import registry

    if path == "factored":
        return registry.FactoredTask(method, factors, shape)
    deltas = torch.empty(len(factors), *shape, dtype=torch.float32)
    for t, (b, a) in enumerate(factors):
        torch.matmul(b.float(), a.float(), out=deltas[t])  # no m×n temporary
    return registry.TensorTask(method, deltas, factor_dtype=torch.float64)


def measure_one(args) -> dict:
    """One (method, shape, path) in this process: time, peak RSS above the inputs, the result."""
    import torch

    from merges import registry

    m, n = args.shape
    factors = _factors(m, n, args.rank, args.experts)
    meth = registry.methods()[args.method]
    params = meth.parse_params(PARAMS.get(args.method, {}))
    fn = meth.factored if args.path == "factored" else meth.fn
    fn(_task(args.method, args.path, _factors(64, 96, 4, args.experts, 1), (64, 96)), params)
    times, out, info = [], None, {}
    before = after = gap = 0
    for rep in range(args.reps):
        task = _task(args.method, args.path, factors, (m, n))
        if rep == 0:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            gap = before - _rss_kb()
        t0 = time.perf_counter()
        out = fn(task, params)
        times.append(time.perf_counter() - t0)
        if rep == 0:
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        info = task.info
        del task
    rec = {
        "method": args.method,
        "shape": [m, n],
        "path": args.path,
        "seconds": statistics.median(times),
        "reps": args.reps,
        "peak_mb": (after - before) / 1024,
        "hwm_gap_mb": gap / 1024,
        "none": out is None,
        "info": {k: v for k, v in info.items() if k in ("rank_kept", "rank", "flag")},
    }
    ref = Path(args.result)
    if out is not None and args.path == "dense":
        torch.save(out.float(), ref)
    elif out is not None and ref.exists():
        dense = torch.load(ref)
        rec["rel_diff"] = float(
            torch.linalg.matrix_norm(out.double() - dense.double())
            / torch.linalg.matrix_norm(dense.double())
        )
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--shapes", default=",".join(f"{m}x{n}" for m, n in SHAPES))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--dense-reps", type=int, default=1)
    ap.add_argument("--factored-reps", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the records here")
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "MxN", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        args.method, shape, args.path = args.one
        args.shape = tuple(int(x) for x in shape.split("x"))
        print(json.dumps(measure_one(args)), flush=True)
        return 0

    import torch

    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"r = {args.rank}, T = {args.experts}; dense reps {args.dense_reps} (median), "
        f"factored reps {args.factored_reps} (median); peak = ru_maxrss delta above the inputs "
        "in a fresh subprocess; load average at the start: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        flush=True,
    )
    records = []
    header = (
        "| method | shape | dense s | factored s | speed-up | dense peak MB | factored peak MB "
        "| rel. diff |\n|---|---|---|---|---|---|---|---|"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for m, n in shapes:
                pair = {}
                result = Path(tmp) / f"{method}_{m}x{n}.pt"
                for path in ("dense", "factored"):
                    reps = args.dense_reps if path == "dense" else args.factored_reps
                    cmd = [sys.executable, "-m", "devtools.bench_factored", "--one", method]
                    cmd += [f"{m}x{n}", path, "--reps", str(reps), "--result", str(result)]
                    cmd += ["--rank", str(args.rank), "--experts", str(args.experts)]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(proc.stdout + proc.stderr, file=sys.stderr)
                        return proc.returncode
                    rec = json.loads(proc.stdout.strip().splitlines()[-1])
                    records.append(rec)
                    pair[path] = rec
                    print(json.dumps(rec), file=sys.stderr, flush=True)
                d, f = pair["dense"], pair["factored"]
                if f["none"]:
                    why = ", flagged" if d["info"].get("flag") else ""
                    fs, ratio, fpk, diff = f"None (dense path{why})", "-", "-", "-"
                else:
                    fs, ratio = f"{f['seconds']:.3f}", f"{d['seconds'] / f['seconds']:.0f}×"
                    fpk, diff = f"{f['peak_mb']:.0f}", f"{f.get('rel_diff', float('nan')):.1e}"
                label = " ".join([method, *(f"{k} {v}" for k, v in PARAMS.get(method, {}).items())])
                rows.append(
                    f"| {label} | {m}×{n} | {d['seconds']:.2f} | {fs} | {ratio} "
                    f"| {d['peak_mb']:.0f} | {fpk} | {diff} |"
                )
    print(f"# load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(header)
    print("\n".join(rows))
    gaps = [r for r in records if abs(r["hwm_gap_mb"]) > 16]
    if gaps:
        print(
            f"# note: {len(gaps)} measurement(s) started with the high-water mark > 16 MB above RSS"
        )
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
