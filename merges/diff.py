"""`python -m merges diff A B [--base DIR]`: compare two model folders tensor by tensor.

Tensors are read in row blocks through `merges.io.Checkpoint` and compared in float64, so memory
stays at one block of each side whatever the tensor's size. Per tensor: max |A - B|, the relative
Frobenius difference ||A - B||_F / max(||ref||_F, TINY) with ref = B (or B - base with `--base`,
which compares the task vectors A - base and B - base), the share of entries that differ, and the
largest distance in bf16 ulps (exact, from the bf16 bit patterns; a side stored in another dtype is
first rounded to bf16 as the merge's output would be).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from merges.adapter import is_adapter
from merges.errors import MergeInputError
from merges.io import INDEX_NAME, SINGLE_NAME, Checkpoint

TINY = 1e-30  # floor of the reference norm: an all-zero reference gives a huge, finite ratio
BLOCK_ELEMENTS = 1 << 22  # entries per side read at once (32 MiB in float64)
SHOW = 5  # names quoted per problem in an input error


def open_folder(role: str, path: Path) -> Checkpoint:
    """The checkpoint in `path`; a missing or unreadable folder is a MergeInputError naming `role`."""
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise MergeInputError(
            f"diff {role} {path} {what}; give a model folder with {SINGLE_NAME} or {INDEX_NAME}"
        )
    if is_adapter(path):
        raise MergeInputError(
            f"diff {role}: {path} is a PEFT LoRA adapter, and diff compares stored weights of full "
            "model folders; compare adapters by their ΔW with `python -m merges fingerprint "
            f"{path} --base BASE --baseline FINGERPRINTS.json`, or fold the adapter into its base first"
        )
    try:
        return Checkpoint(path)
    except MergeInputError as e:
        raise MergeInputError(f"diff {role}: {e}") from None


def _some(names) -> str:
    names = sorted(names)
    more = f" (+{len(names) - SHOW} more)" if len(names) > SHOW else ""
    return ", ".join(names[:SHOW]) + more


def layout_problems(r1: str, c1: Checkpoint, r2: str, c2: Checkpoint) -> list[str]:
    """How the tensor names and shapes of two checkpoints differ (empty when they agree)."""
    n1, n2 = set(c1.names()), set(c2.names())
    out = []
    if n1 - n2:
        out.append(f"only in {r1}: {_some(n1 - n2)}")
    if n2 - n1:
        out.append(f"only in {r2}: {_some(n2 - n1)}")
    shapes = [
        f"{n} {r1} {list(c1.shape(n))} vs {r2} {list(c2.shape(n))}"
        for n in sorted(n1 & n2)
        if c1.shape(n) != c2.shape(n)
    ]
    if shapes:
        more = f" (+{len(shapes) - SHOW} more)" if len(shapes) > SHOW else ""
        out.append(f"shapes differ: {'; '.join(shapes[:SHOW])}{more}")
    return out


def ordered_bf16(t: torch.Tensor) -> torch.Tensor:
    """bf16 bit patterns mapped to int32 on an ordered line: adjacent bf16 values differ by 1,
    +0 and -0 are both 0, and negative values mirror positive ones."""
    bits = t.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    return torch.where(bits >= 0x8000, 0x8000 - bits, bits)


def compare_tensor(name: str, a: Checkpoint, b: Checkpoint, base: Checkpoint | None) -> dict:
    """The figures of one tensor, accumulated over row blocks in float64."""
    ia, ib = a.tensors[name], b.tensors[name]
    shape = ia.shape
    numel = math.prod(shape)
    row = math.prod(shape[1:]) if shape else 1
    rows = shape[0] if shape else 1
    step = max(1, BLOCK_ELEMENTS // max(row, 1))
    max_abs, sq_diff, sq_ref, changed, ulps = 0.0, 0.0, 0.0, 0, 0
    for r0 in range(0, rows, step):
        span = (r0, min(rows, r0 + step)) if shape else None
        xa, xb = a.read(name, span), b.read(name, span)
        fa, fb = xa.to(torch.float64), xb.to(torch.float64)
        d = fa - fb
        differs = (fa != fb) & ~(fa.isnan() & fb.isnan())
        ref = fb - base.read(name, span).to(torch.float64) if base is not None else fb
        if d.numel():
            top = d.abs().max().item()
            max_abs = top if math.isnan(top) or top > max_abs else max_abs
            sq_diff += torch.dot(d.reshape(-1), d.reshape(-1)).item()
            sq_ref += torch.dot(ref.reshape(-1), ref.reshape(-1)).item()
            changed += int(differs.sum())
            gap = (ordered_bf16(xa) - ordered_bf16(xb)).abs().max().item()
            ulps = max(ulps, int(gap))
    return {
        "name": name,
        "shape": list(shape),
        "dtype_a": str(ia.dtype).removeprefix("torch."),
        "dtype_b": str(ib.dtype).removeprefix("torch."),
        "max_abs": max_abs,
        "rel_frobenius": math.sqrt(sq_diff) / max(math.sqrt(sq_ref), TINY),
        "ref_norm": math.sqrt(sq_ref),
        "changed": changed,
        "share_changed": changed / numel if numel else 0.0,
        "max_bf16_ulps": ulps,
        "ulps_rounded": ia.dtype != torch.bfloat16 or ib.dtype != torch.bfloat16,
    }


def exceeds(row: dict, max_rel: float | None, max_ulps: int | None) -> bool:
    """Whether a tensor breaks a given tolerance; with neither given, any change does."""
    if max_rel is None and max_ulps is None:
        max_rel = 0.0
    over = max_rel is not None and not row["rel_frobenius"] <= max_rel  # NaN counts as over
    if max_ulps is not None and row["max_bf16_ulps"] > max_ulps:
        over = True
    if max_rel == 0.0 and row["changed"]:
        over = True  # a change too small to move the fp64 norm still breaks a zero tolerance
    return over


def diff_folders(
    a: Path,
    b: Path,
    base: Path | None = None,
    max_rel: float | None = None,
    max_ulps: int | None = None,
) -> dict:
    """Compare folders `a` and `b` (task vectors against `base` if given); the report as a dict."""
    ca, cb = open_folder("A", Path(a)), open_folder("B", Path(b))
    problems = layout_problems("A", ca, "B", cb)
    cbase = None
    if base is not None:
        cbase = open_folder("--base", Path(base))
        problems += [f"--base vs A: {p}" for p in layout_problems("A", ca, "base", cbase)]
    if problems:
        raise MergeInputError(
            f"diff: A ({a}) and B ({b}){' and --base' if base else ''} differ in tensor names "
            f"or shapes: {'; '.join(problems)}; compare checkpoints of one architecture"
        )
    rows = []
    for name in ca.names():
        row = compare_tensor(name, ca, cb, cbase)
        row["over_tolerance"] = exceeds(row, max_rel, max_ulps)
        rows.append(row)
    rows.sort(key=_badness, reverse=True)
    summary = {
        "tensors": len(rows),
        "identical": sum(not r["changed"] for r in rows),
        "changed": sum(bool(r["changed"]) for r in rows),
        "over_tolerance": sum(r["over_tolerance"] for r in rows),
        "dtype_differs": sorted(r["name"] for r in rows if r["dtype_a"] != r["dtype_b"]),
        "max_rel_frobenius": max((r["rel_frobenius"] for r in rows), default=0.0),
        "max_bf16_ulps": max((r["max_bf16_ulps"] for r in rows), default=0),
    }
    return {
        "a": str(a),
        "b": str(b),
        "base": str(base) if base is not None else None,
        "reference": "B - base" if base is not None else "B",
        "tolerance": {"max_rel": max_rel, "max_ulps": max_ulps},
        "summary": summary,
        "tensors": rows,
    }


def _badness(row: dict) -> tuple:
    """Sort key: over the tolerance first, then by relative Frobenius difference (NaN worst)."""
    rel, top = row["rel_frobenius"], row["max_abs"]
    nan_last = (math.inf if math.isnan(rel) else rel, math.inf if math.isnan(top) else top)
    return (row["over_tolerance"], nan_last[0], row["max_bf16_ulps"], nan_last[1])


def markdown(report: dict) -> str:
    """The changed tensors, worst first, as a markdown table, then one summary line."""
    ref = "‖B − base‖" if report["base"] else "‖B‖"
    lines = []
    changed = [r for r in report["tensors"] if r["changed"]]
    if changed:
        lines += [
            f"| tensor | shape | dtype A / B | max abs Δ | rel Frobenius (/ {ref}) "
            "| entries changed | max bf16 ulps | over tolerance |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in changed:
            dtypes = (
                r["dtype_a"] if r["dtype_a"] == r["dtype_b"] else f"{r['dtype_a']} / {r['dtype_b']}"
            )
            lines.append(
                f"| {r['name']} | {'×'.join(map(str, r['shape']))} | {dtypes} | {r['max_abs']:.3g} "
                f"| {r['rel_frobenius']:.3g} | {100 * r['share_changed']:.3g}% "
                f"| {r['max_bf16_ulps']}{'*' if r['ulps_rounded'] else ''} "
                f"| {'yes' if r['over_tolerance'] else ''} |"
            )
        lines.append("")
    s = report["summary"]
    line = (
        f"{s['identical']} of {s['tensors']} tensors identical, {s['changed']} changed, "
        f"{s['over_tolerance']} over the tolerance"
    )
    if s["dtype_differs"]:
        line += f"; dtype differs in {len(s['dtype_differs'])}: {_some(s['dtype_differs'])}"
    if any(r["ulps_rounded"] for r in changed):
        line += "; * ulps of values rounded to bf16"
    return "\n".join(lines + [line]) + "\n"


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"
