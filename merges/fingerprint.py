"""Fingerprints of a merged model: a few numbers per tensor that the same code reproduces and a
changed merge moves, small enough to commit (`merges.fingerprint_check` compares them).

Per tensor, from the stored weights: the Frobenius norm of the merged delta (merged - base), `K`
projections of that delta on fixed seeded Gaussian vectors (each projection has variance
||delta||^2, so ||p_a - p_b|| / sqrt(K) estimates ||delta_a - delta_b||_F without either delta at
hand), and the SHA-256 of the stored bytes (bit-identical or not). A merge written as a PEFT
adapter is fingerprinted through its ΔW = s·B·A per base tensor (float32; its bytes hashed).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path

import torch

from merges.adapter import Adapter, is_adapter
from merges.errors import MergeInputError
from merges.fingerprint_check import SEED, VERSION, K
from merges.io import Checkpoint

BLOCK_ELEMENTS = 1 << 20  # entries per block: its K Gaussian vectors are 32 MiB in float32


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
        if base is not None and not merged.is_delta:
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
    ref = Checkpoint(base) if base is not None else None
    if is_adapter(folder):
        if ref is None:
            raise MergeInputError(f"{folder} is a PEFT adapter: its fingerprint needs the base")
        merged = Adapter(folder, ref)
    else:
        merged = Checkpoint(folder)
    return {
        "version": VERSION,
        "k": K,
        "seed": SEED,
        "delta_against": str(base) if base is not None else None,
        "tensors": {n: tensor_fingerprint(n, merged, ref) for n in sorted(merged.names())},
    }
