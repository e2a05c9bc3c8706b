from typing import Literal

import torch
from pydantic import Field

from merges.linalg import expand, factor_span, numerical_rank, polar_and_singular_values, top_svd
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored

RANK_EPS = torch.finfo(torch.float32).eps
"""ε of the rank cut: that of the fp32 task vectors the engine hands to the dense path (as TSV)."""


class IsoCParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·s̄·U Vᵀ")
    rank: Literal["full", "numerical"] = Field(
        "full",
        description="full: U, V and the mean over all min(m, n) singular values (the paper's); "
        "numerical: only the numerically nonzero singular directions (rank cut like TSV's "
        "numerical_rank with fp32 eps), the mean over those; exact and factored for LoRA "
        "experts; a deviation from the paper, which averages over all min(m, n)",
    )


@register("iso_c", IsoCParams)
def iso_c(task: TensorTask, p: IsoCParams):
    """Iso-C: Σ_t Δ_t = U S Vᵀ, Δ* = α·mean(S)·U Vᵀ over all r singular values (Marczak et al. 2025).

    U Vᵀ and S in factor_dtype (via Gram eigh where accurate, see merges.linalg); the result in fp32.
    rank = numerical (a deviation from the paper, spec §2.7 pitfall): only the k triplets with
    s > max(m, n)·ε_fp32·s_1 (merges.linalg.numerical_rank), Δ* = α·mean(s_1..k)·U_k V_kᵀ, so the
    completion vectors of zero singular values (a low-rank Σ_t Δ_t, e.g. LoRA experts) do not
    enter at magnitude s̄; on a full-rank Σ_t Δ_t it is the paper's Iso-C. Records `rank` = k.
    """
    ta = task.deltas.sum(0, dtype=task.factor_dtype)
    if p.rank == "numerical":
        u, s, v = top_svd(ta, rank_eps=RANK_EPS)
        task.info["rank"] = int(s.numel())
        if s.numel() == 0:
            return torch.zeros_like(task.deltas[0])
        return (p.scale * s.mean() * (u @ v.T)).to(task.deltas.dtype)
    pol, s = polar_and_singular_values(ta)
    return (p.scale * s.mean() * pol).to(task.deltas.dtype)


@register_factored("iso_c")
def iso_c_factored(task: FactoredTask, p: IsoCParams):
    """Δ* = α·mean(s_1..k)·L U_k V_kᵀ Pᵀ for Σ_t Δ_t = L (Σ_t b_t a_t) Pᵀ = L U S Vᵀ Pᵀ (rank = numerical).

    `iso_c` with rank = numerical for low-rank experts: Σ_t Δ_t lies in the span of the stacked
    factors (merges.linalg.factor_span), so its nonzero triplets are those of the small core, cut
    at the same max(m, n)·ε_fp32·s_1. None for rank = full, whose completion vectors of zero
    singular values (LAPACK's choice) lie outside the span.
    """
    if p.rank != "numerical":
        return None
    m, n = task.shape
    left, right, cores = factor_span(task.factors)
    u, s, vh = torch.linalg.svd(sum(b @ a for b, a in cores), full_matrices=False)
    k = numerical_rank(s, (m, n), RANK_EPS)
    task.info["rank"] = k
    if k == 0:
        return torch.zeros(m, n, device=left.device)
    return expand(left, p.scale * s[:k].mean() * (u[:, :k] @ vh[:k]), right)
