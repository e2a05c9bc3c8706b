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


def rescaled(x: torch.Tensor, masked: torch.Tensor, how: str, keep_prob) -> torch.Tensor:
    """inverse: M ⊙ Δ / p (the DARE paper's 1/(1 − drop)); l1: M ⊙ Δ · ‖Δ‖₁/‖M ⊙ Δ‖₁ (mergekit's
    `rescale`, left unscaled when either norm is below 1e-7); none: M ⊙ Δ."""
    if how == "inverse":
        return masked.div_(keep_prob)
    if how == "l1":
        before, after = x.abs().sum(), masked.abs().sum()
        if before < 1e-7 or after < 1e-7:
            return masked
        return masked.mul_(before / after)
    return masked


def top_k_exact(x: torch.Tensor, density: float) -> torch.Tensor:
    """Keep exactly max(1, int(density·n)) entries of largest |x| (ties broken by torch.argsort's
    order, as mergekit's `magnitude`); density ≥ 1 keeps all."""
    if density >= 1:
        return x.clone()
    k = max(1, int(density * x.numel()))
    keep = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
    keep[torch.argsort(x.abs().reshape(-1), descending=True)[:k]] = True
    return torch.where(keep.view(x.shape), x, 0.0)


def consensus_mask(d: torch.Tensor) -> torch.Tensor:
    """k_t = [sign δ_t = γ], γ = +1 where Σ_t δ_t ≥ 0 else −1 (mergekit's `sum` consensus)."""
    gamma = torch.where(d.sum(0) >= 0, 1.0, -1.0)
    return d.sign() == gamma


def combine(task: TensorTask, sparse: torch.Tensor, p: GtaParams, consensus: bool) -> torch.Tensor:
    """Δ* from the sparsified deltas [T, ...] (overwritten): weight, consensus, normalise, ×λ."""
    w = torch.tensor(expert_values(p.weight, sparse.shape[0]), dtype=sparse.dtype)
    w = w.to(sparse.device).view(-1, *([1] * (sparse.dim() - 1)))
    d = sparse.mul_(w)
    if consensus:
        keep = consensus_mask(d)
        merged = torch.where(keep, d, 0.0).sum(0)
        divisor = (keep * w).sum(0)
        divisor[divisor == 0] = 1
    else:
        merged = d.sum(0)
        divisor = w.sum()
        divisor = torch.where(divisor.abs() < 1e-8, 1.0, divisor)
    if p.normalize:
        merged = merged / divisor
    return merged.mul_(p.scale)


def sparsify_each(task: TensorTask, p: GtaParams, fn) -> torch.Tensor:
    """`fn(t, Δ_t, density_t) -> δ_t` for every expert, with each one's nonzero share recorded."""
    densities = expert_values(p.density, task.deltas.shape[0])
    out = torch.stack([fn(t, d, densities[t]) for t, d in enumerate(task.deltas)])
    record_nonzero(task, out)
    return out


def record_nonzero(task: TensorTask, sparse: torch.Tensor) -> None:
    """merge.json's `nonzero_frac`: each expert's share of nonzero entries after sparsifying."""
    task.info["nonzero_frac"] = [int(torch.count_nonzero(x)) / max(1, x.numel()) for x in sparse]


def check_window(density: float, epsilon: float, where: str) -> None:
    if not (0 < density - epsilon and density + epsilon < 1) and density < 1:
        raise MergeInputError(
            f"{where}: density ± epsilon must lie in (0, 1) (density {density}, epsilon {epsilon}); "
            "lower epsilon or move density"
        )
