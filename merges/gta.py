"""The task-vector family (TA, TIES, DARE, Breadcrumbs, DELLA and their sign-consensus forms).

Per expert t: δ_t = w_t · rescale(M_t ⊙ Δ_t), with M_t the method's sparsification mask; then
    Δ* = λ · Σ_t k_t δ_t / D,   k_t = [sign δ_t = γ] with consensus, else 1,
    γ = +1 where Σ_t δ_t ≥ 0 else −1 (mergekit's `sum` consensus; zeros never agree),
    D = Σ_t k_t w_t (0 → 1) when `normalize`, else 1.
This is mergekit 0.1.5's `GeneralizedTaskArithmeticMerge` written from its formula; the masks are
the project's own (seeded per expert and tensor, so a merge is the same on every machine).
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from pydantic import Field

from merges.errors import MergeInputError
from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert

Rescale = Literal["inverse", "l1", "none"]


class GtaParams(Params):
    """Parameters every method of the family has (λ is `scale`, mergekit's `lambda`)."""

    weight: PerExpert() = per_expert(1.0, "w_t: the expert's weight")
    scale: float = Field(1.0, description="λ applied to the combined deltas (mergekit: lambda)")
    normalize: bool = Field(False, description="divide by the (agreeing) experts' summed weights")


def task_seed(seed: int, t: int, name: str) -> int:
    """The mask seed of expert t on tensor `name` (as DARE's): identical on every device."""
    return seed + 1000 * t + zlib.crc32(name.encode())


def uniform(shape, seed: int, device) -> torch.Tensor:
    """U[0, 1) draws from a CPU generator seeded with `seed`, moved to `device`."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float32).to(device)


def drop_(x: torch.Tensor, keep: torch.Tensor, how: str, keep_prob) -> torch.Tensor:
    """In place, x ← rescale(M ⊙ x) for the keep mask M. inverse: ÷ p (the DARE paper's
    1/(1 − drop); DELLA's per-entry p); l1: × ‖x‖₁/‖M ⊙ x‖₁ (mergekit's `rescale`, left unscaled
    when either norm is below 1e-7); none: M ⊙ x."""
    before = x.abs().sum() if how == "l1" else None
    x.masked_fill_(~keep, 0)
    if how == "inverse":
        return x.div_(keep_prob)
    if how == "l1":
        after = x.abs().sum()
        if before < 1e-7 or after < 1e-7:
            return x
        return x.mul_(before / after)
    return x


def row_blocks(d: torch.Tensor, entries: int = 1 << 20):
    """d as [rows, last dim] (a 1-D tensor is one row), in blocks of about `entries` entries."""
    rows = d.reshape(1, -1) if d.dim() < 2 else d.reshape(-1, d.shape[-1])
    step = max(1, entries // max(1, rows.shape[1]))
    return [rows[r : r + step] for r in range(0, rows.shape[0], step)]


def top_k_exact(x: torch.Tensor, density: float) -> torch.Tensor:
    """Keep exactly max(1, int(density·n)) entries of largest |x| (ties broken by torch.argsort's
    order, as mergekit's `magnitude`); density ≥ 1 keeps all. Overwrites and returns x."""
    if density >= 1:
        return x
    k = max(1, int(density * x.numel()))
    order = torch.argsort(x.abs().reshape(-1), descending=True)
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    keep[order[:k]] = True
    del order
    return x.masked_fill_(~keep.view(x.shape), 0)


def positive_majority(d: torch.Tensor) -> torch.Tensor:
    """γ = +1 (True) where Σ_t δ_t ≥ 0, else −1 (False): mergekit's `sum` consensus."""
    return d.sum(0) >= 0


def agrees(x: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """[sign x = γ]: x > 0 where γ = +1, x < 0 where γ = −1 (zeros never agree)."""
    return torch.where(positive, x > 0, x < 0)


def combine(task: TensorTask, sparse: torch.Tensor, p: GtaParams, consensus: bool) -> torch.Tensor:
    """Δ* from the sparsified deltas [T, ...] (overwritten): weight, consensus, normalise, ×λ.
    One expert at a time, so the temporaries are a few tensors of one expert's size."""
    w = expert_values(p.weight, sparse.shape[0])
    for x, wt in zip(sparse, w, strict=True):
        x.mul_(wt)
    merged = torch.zeros_like(sparse[0])
    if consensus:
        positive = positive_majority(sparse)
        divisor = torch.zeros_like(merged) if p.normalize else None
        for x, wt in zip(sparse, w, strict=True):
            keep = agrees(x, positive)
            merged.add_(x.masked_fill_(~keep, 0))
            if divisor is not None:
                divisor.add_(keep, alpha=wt)
        if divisor is not None:
            merged.div_(divisor.masked_fill_(divisor == 0, 1))
    else:
        for x in sparse:
            merged.add_(x)
        if p.normalize:
            total = sum(w)
            merged.div_(1.0 if abs(total) < 1e-8 else total)
    return merged.mul_(p.scale)


def sparsify_each(task: TensorTask, p: GtaParams, fn) -> torch.Tensor:
    """`fn(t, Δ_t, density_t) -> δ_t` for every expert, written over task.deltas (which it returns),
    with each one's nonzero share recorded."""
    densities = expert_values(p.density, task.deltas.shape[0])
    for t, d in enumerate(task.deltas):
        out = fn(t, d, densities[t])
        if out.data_ptr() != d.data_ptr():
            d.copy_(out)
        del out
    record_nonzero(task, task.deltas)
    return task.deltas


def record_nonzero(task: TensorTask, sparse: torch.Tensor) -> None:
    """merge.json's `nonzero_frac`: each expert's share of nonzero entries after sparsifying."""
    task.info["nonzero_frac"] = [int(torch.count_nonzero(x)) / max(1, x.numel()) for x in sparse]


def check_window(density: float, epsilon: float, where: str) -> None:
    if not (0 < density - epsilon and density + epsilon < 1) and density < 1:
        raise MergeInputError(
            f"{where}: density ± epsilon must lie in (0, 1) (density {density}, epsilon {epsilon}); "
            "lower epsilon or move density"
        )
