"""`python -m merges bench`: merge full-width OLMo-3-7B-shaped checkpoints, side by side with the
I/O floor and mergekit, in one run.

Inputs: a base and three experts with the real OLMo-3 tensor names, config and widths (vocab
100278, hidden 4096, intermediate 11008), `--layers` blocks, bf16, sharded with an index as on the
hub. Experts carry RL-like deltas: 10% of the entries moved by 1 to 3 bf16 ulps, so that many merged
entries round back to the base. They are generated once per workdir (seeded) and reused
(`devtools.model_bench_inputs`).

Rows: the I/O floor (read every input byte, write an output of the same size, no merging); each
method through `python -m merges run`; for every method mergekit also has, the same mergekit YAML
through `merges run --mergekit-config` and through `mergekit-yaml` when it is installed (RegMean
gets seeded synthetic Grams, one folder shared by the experts).
Each is a child process measured by `devtools.measure`: wall time, peak
anonymous memory of the process tree, bytes read and written.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import textwrap
from pathlib import Path

from devtools.measure import Measured, run_measured
from devtools.model_bench_inputs import make_inputs, make_stats
from devtools.olmo3_layout import HIDDEN, INTER, VOCAB
from merges.registry import get_method

GB = 1e9
# Methods mergekit also has: both rows run the same mergekit YAML (ours through
# `merges run --mergekit-config`), so both do the same work: every tensor merged, mergekit's variants.
# method -> (per-model parameters, global parameters, experts merged)
MERGEKIT = {
    "task_arithmetic": ({"weight": 0.4}, {"normalize": False}, 3),
    "ties": ({"weight": 1.0, "density": 0.2}, {"normalize": True}, 3),
    "linear": ({"weight": 1.0}, {}, 3),
    "slerp": ({}, {"t": 0.5}, 1),
    "nuslerp": ({"weight": 1.0}, {}, 2),
    "multislerp": ({"weight": 1.0}, {}, 3),
    "karcher": ({}, {}, 3),
    "model_stock": ({}, {}, 3),
    "breadcrumbs": ({"weight": 0.4, "density": 0.9, "gamma": 0.01}, {}, 3),
    "breadcrumbs_ties": ({"weight": 0.4, "density": 0.9, "gamma": 0.01}, {}, 3),
    "della": ({"weight": 1.0, "density": 0.7, "epsilon": 0.07}, {}, 3),
    "della_linear": ({"weight": 0.4, "density": 0.7, "epsilon": 0.07}, {}, 3),
    "dare_linear": ({"weight": 0.4, "density": 0.5}, {}, 3),
    "dare_ties": ({"weight": 0.4, "density": 0.5}, {}, 3),
    "sce": ({}, {"select_topk": 0.5}, 3),
    "ram": ({}, {}, 3),
    "ramplus_tl": ({}, {}, 3),
    "nearswap": ({}, {"t": 1e-4}, 1),
}

FLOOR = textwrap.dedent(
    """
    import os, sys
    out, *files = sys.argv[1:]
    buf = bytearray(64 * 1024 * 1024)
    view = memoryview(buf)
    total = 0
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        while (n := os.readv(fd, [view])) > 0:
            total += n
        os.close(fd)
    size = int(os.environ["FLOOR_WRITE_BYTES"])
    with open(out, "wb") as f:
        while size > 0:
            k = min(size, len(buf))
            f.write(view[:k])
            size -= k
    """
)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in _files(folder))


def _row(name: str, tool: str, m: Measured, out_size: int | None = None) -> dict:
    return {
        "name": name,
        "tool": tool,
        "ok": m.returncode == 0,
        "returncode": m.returncode,
        "wall_s": round(m.wall_s, 2),
        "peak_anon_gb": round(m.peak_anon_bytes / GB, 3),
        "read_gb": round(m.read_bytes / GB, 3),
        "written_gb": round(m.written_bytes / GB, 3),
        "output_gb": None if out_size is None else round(out_size / GB, 3),
        **({} if m.returncode == 0 else {"error": m.output_tail[-2000:]}),
    }


def _block_seconds(out: Path, layers: int) -> dict:
    """Seconds per transformer block, from the merge's own per-tensor timings (merge.json)."""
    rec = out / "merge.json"
    if not rec.exists():
        return {}
    per = json.loads(rec.read_text())["timings"]["per_tensor_s"]
    block = sum(v for k, v in per.items() if ".layers." in k)
    return {"per_block_s": round(block / layers, 1)}


def _mergekit_config(method: str, folders: list[Path], path: Path) -> None:
    per_model, params, n = MERGEKIT[method]
    models = [
        {"model": str(f), **({"parameters": per_model} if per_model else {})}
        for f in folders[1 : 1 + n]
    ]
    cfg = {
        "merge_method": method,
        "base_model": str(folders[0]),
        "models": ([{"model": str(folders[0])}] if method in ("slerp", "nearswap") else [])
        + models,
        **({"parameters": params} if params else {}),
        "dtype": "float32",
        "out_dtype": "bfloat16",
    }
    if method in ("linear", "karcher"):  # over the listed models only
        del cfg["base_model"]
    path.write_text(json.dumps(cfg, indent=2))


def mergekit_cli() -> str | None:
    """`mergekit-yaml` of this environment (beside this Python), else on PATH, else None."""
    here = Path(sys.executable).parent / "mergekit-yaml"
    return str(here) if here.exists() else shutil.which("mergekit-yaml")


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def bench(
    workdir: Path,
    layers: int = 2,
    methods: tuple[str, ...] = ("average", "task_arithmetic", "ties", "dare"),
    device: str = "cpu",
    mergekit: str = "auto",
    threads: int | None = None,
    json_path: Path | None = None,
) -> dict:
    """Run every row, print the side-by-side table, write the JSON record; return it."""
    threads = threads or os.cpu_count() or 1
    env = _env(threads)
    folders = make_inputs(workdir, layers)
    in_size = _size(folders[0])
    rows = []
    out = workdir / "out"
    floor_out = workdir / "floor.bin"
    floor_cmd = [
        sys.executable,
        "-c",
        FLOOR,
        str(floor_out),
        *map(str, sum(map(_files, folders), [])),
    ]
    floor_env = dict(env, FLOOR_WRITE_BYTES=str(in_size))
    run_measured(floor_cmd, env=floor_env)  # warm-up: every row then reads from the page cache
    m = run_measured(floor_cmd, env=floor_env)
    floor_out.unlink(missing_ok=True)
    rows.append(_row("I/O floor", "read inputs + write output", m, in_size))
    mk = mergekit_cli() if mergekit != "off" else None
    if mergekit == "on" and mk is None:
        raise SystemExit("--mergekit on: mergekit-yaml is not installed (pip install mergekit)")
    for method in methods:
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "merges", "run"]
        if method in MERGEKIT:
            cfg = workdir / f"mergekit-{method}.yaml"
            _mergekit_config(method, folders, cfg)
            cmd += ["--mergekit-config", str(cfg)]
        else:
            cmd += ["--method", method, "--base", str(folders[0])]
            cmd += sum((["--expert", str(f)] for f in folders[1:]), [])
        cmd += ["--output", str(out), "--device", device, "--quiet"]
        if get_method(method).needs_stats:
            cmd += ["--stats", str(make_stats(workdir, layers))] * 3
        m = run_measured(cmd, env=env)
        row = _row(method, "mergeeval", m, _size(out) if out.exists() else None)
        rows.append(row | _block_seconds(out, layers))
    # mergekit last: an out-of-memory kill empties the page cache the other rows rely on
    for method in [m for m in methods if m in MERGEKIT] if mk else []:
        shutil.rmtree(out, ignore_errors=True)
        cfg = workdir / f"mergekit-{method}.yaml"
        _mergekit_config(method, folders, cfg)
        mk_cmd = [mk, str(cfg), str(out), "--quiet", "--random-seed", "0"]
        mk_cmd += ["--cuda"] if device == "cuda" else []
        m = run_measured(mk_cmd, env=env)
        rows.append(_row(method, "mergekit", m, _size(out) if out.exists() else None))
    shutil.rmtree(out, ignore_errors=True)
    record = {
        "inputs": {
            "layers": layers,
            "vocab": VOCAB,
            "hidden": HIDDEN,
            "intermediate": INTER,
            "experts": 3,
            "checkpoint_gb": round(in_size / GB, 3),
            "shards": len(_files(folders[0])),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "threads": threads,
            "device": device,
            "processor": platform.processor() or platform.machine(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1),
        },
        "rows": _ratios(rows),
    }
    print(table(record))
    if json_path:
        Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _ratios(rows: list[dict]) -> list[dict]:
    floor = rows[0]["wall_s"]
    mk = {r["name"]: r["wall_s"] for r in rows if r["tool"] == "mergekit" and r["ok"]}
    for r in rows:
        r["x_floor"] = round(r["wall_s"] / floor, 2) if floor else None
        peer = mk.get(r["name"]) if r["tool"] == "mergeeval" else None
        r["x_mergekit"] = round(r["wall_s"] / peer, 2) if peer else None
    return rows


def table(record: dict) -> str:
    i, mach = record["inputs"], record["machine"]
    head = (
        f"OLMo-3-7B-shaped checkpoints: {i['layers']} blocks, vocab {i['vocab']}, hidden {i['hidden']}, "
        f"intermediate {i['intermediate']}; base + {i['experts']} experts of {i['checkpoint_gb']:.2f} GB "
        f"({i['shards']} shards); {mach['device']}, {mach['threads']} threads, {mach['cpus']} CPUs, "
        f"{mach['memory_gb']} GB RAM"
    )
    cols = [
        "row",
        "wall s",
        "x floor",
        "x mergekit",
        "s per block",
        "peak anon GB",
        "read GB",
        "written GB",
    ]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in record["rows"]:
        name = r["name"] if r["name"] == "I/O floor" else f"{r['name']} ({r['tool']})"
        if not r["ok"]:
            rc = r["returncode"]
            why = (
                f"killed by signal {-rc}" + (" (out of memory)" if rc == -9 else "")
                if rc < 0
                else f"failed (exit {rc}): {r['error'].strip().splitlines()[-1][:80]}"
            )
            lines.append(f"| {name} | {why} |")
            continue
        vals = [
            f"{r['wall_s']:.1f}",
            f"{r['x_floor']:.2f}",
            "—" if r["x_mergekit"] is None else f"{r['x_mergekit']:.2f}",
            f"{r['per_block_s']:.1f}" if "per_block_s" in r else "—",
            f"{r['peak_anon_gb']:.2f}",
            f"{r['read_gb']:.2f}",
            f"{r['written_gb']:.2f}",
        ]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
