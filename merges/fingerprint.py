"""Fingerprints of a merged model: a few numbers per tensor that the same code reproduces and a
changed merge moves, small enough to commit, compared with a baseline before any generation runs.

Per tensor, from the stored weights: the Frobenius norm of the merged delta (merged - base), `K`
projections of that delta on fixed seeded Gaussian vectors (each projection has variance
||delta||^2, so ||p_a - p_b|| / sqrt(K) estimates ||delta_a - delta_b||_F without either delta at
hand), and the SHA-256 of the stored bytes (bit-identical or not).

A tensor has moved when its estimated relative change of the delta, or the relative change of the
delta's norm, exceeds the tolerance; a different hash within the tolerance is reported as a
bit-level difference only (see docs/merging.md#fingerprints for how the tolerance was measured).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path

import torch

from merges.io import Checkpoint

K = 8  # projections: the estimate is within a factor 2 of the true change for 98% of tensors
SEED = 20_251_202
BLOCK_ELEMENTS = 1 << 20  # entries per block: its K Gaussian vectors are 32 MiB in float32
TOLERANCE = 1e-2  # relative change of a tensor's delta that counts as moved (measured: docs/merging.md)
TINY = 1e-30
VERSION = 1  # bump when the fingerprint's definition changes: older baselines are then refused


def tensor_fingerprint(name: str, merged: Checkpoint, base: Checkpoint | None) -> dict:
    """Norm, projections and hash of one tensor's delta, read in fixed row blocks (the blocks and
    the generator's stream depend on the name and shape only)."""
    info = merged.tensors[name]
    shape = tuple(info.shape)
    row = math.prod(shape[1:]) if shape else 1
    rows = shape[0] if shape else 1
    step = max(1, BLOCK_ELEMENTS // max(row, 1))
    gen = torch.Generator().manual_seed(SEED ^ zlib.crc32(name.encode()))
    digest = hashlib.sha256()
    floating = info.dtype.is_floating_point
    sq, proj = 0.0, torch.zeros(K, dtype=torch.float64)
    for r0 in range(0, rows, step):
        span = (r0, min(rows, r0 + step)) if shape else None
        x = merged.read(name, span)
        digest.update(x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        if not floating:
            continue
        d = x.to(torch.float64).reshape(-1)
        if base is not None:
            d = d - base.read(name, span).to(torch.float64).reshape(-1)
        sq += torch.dot(d, d).item()
        gauss = torch.randn(d.numel(), K, generator=gen, dtype=torch.float32)
        proj += d @ gauss.to(torch.float64)
    out = {"dtype": str(info.dtype).removeprefix("torch."), "shape": list(shape)}
    if floating:
        out |= {"delta_norm": math.sqrt(sq), "projection": [float(p) for p in proj]}
    return out | {"sha256": digest.hexdigest()}


def fingerprint(folder: Path, base: Path | None) -> dict:
    """The fingerprint of every tensor of a merged folder (deltas against `base` when given)."""
    merged = Checkpoint(folder)
    ref = Checkpoint(base) if base is not None else None
    return {
        "version": VERSION,
        "k": K,
        "seed": SEED,
        "delta_against": str(base) if base is not None else None,
        "tensors": {n: tensor_fingerprint(n, merged, ref) for n in sorted(merged.names())},
    }


def relative_change(new: dict, old: dict) -> float:
    """How far a tensor's delta moved, relative to the old delta's norm: the larger of the
    projection estimate and the change of the norm itself (0.0 for identical bytes)."""
    if new["sha256"] == old["sha256"]:
        return 0.0
    if "delta_norm" not in new or "delta_norm" not in old:
        return math.inf  # a non-float tensor whose bytes changed
    gap = math.dist(new["projection"], old["projection"]) / math.sqrt(len(old["projection"]))
    scale = max(old["delta_norm"], TINY)
    return max(gap / scale, abs(new["delta_norm"] - old["delta_norm"]) / scale)


def compare(new: dict, old: dict, tolerance: float = TOLERANCE) -> dict:
    """One merge's fingerprint against its baseline: which tensors moved beyond `tolerance`, which
    differ in their bits only, and which are missing on either side."""
    for fp, what in ((new, "new"), (old, "baseline")):
        if fp.get("version") != VERSION or fp.get("k") != K or fp.get("seed") != SEED:
            return {"status": "incomparable", "reason": f"the {what} fingerprint has another "
                    f"definition (version {fp.get('version')}, k {fp.get('k')}, seed {fp.get('seed')}); "
                    "write the baseline again with this code"}  # fmt: skip
    a, b = new["tensors"], old["tensors"]
    moved, bits = {}, []
    for name in sorted(set(a) & set(b)):
        rel = relative_change(a[name], b[name])
        if not rel <= tolerance:  # NaN counts as moved
            moved[name] = rel
        elif a[name]["sha256"] != b[name]["sha256"]:
            bits.append(name)
    only_new, only_old = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    status = "moved" if moved or only_new or only_old else "bits" if bits else "identical"
    return {
        "status": status,
        "tolerance": tolerance,
        "moved": dict(
            sorted(moved.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else -math.inf)
        ),
        "bit_differences": bits,
        "only_new": only_new,
        "only_baseline": only_old,
        "tensors": len(a),
    }


def summary_line(merge_id: str, result: dict, show: int = 5) -> str:
    """One line for a log or a console: the merge, its status, and the tensors that moved most."""
    status = result["status"]
    if status == "moved":
        worst = ", ".join(f"{n} ({r:.3g})" for n, r in list(result["moved"].items())[:show])
        more = len(result["moved"]) - show
        extra = (
            [f"only in the new merge: {', '.join(result['only_new'][:show])}"]
            if result["only_new"]
            else []
        )
        extra += (
            [f"only in the baseline: {', '.join(result['only_baseline'][:show])}"]
            if result["only_baseline"]
            else []
        )
        tail = f" (+{more} more)" if more > 0 else ""
        return (f"{merge_id}: MOVED, {len(result['moved'])} of {result['tensors']} tensors beyond "
                f"{result['tolerance']:g} (relative change of the delta): {worst}{tail}"
                + "".join(f"; {e}" for e in extra))  # fmt: skip
    if status == "bits":
        return (f"{merge_id}: within tolerance; {len(result['bit_differences'])} tensors differ in "
                "their bits only")  # fmt: skip
    if status == "incomparable":
        return f"{merge_id}: not compared: {result['reason']}"
    return f"{merge_id}: identical to the baseline"
