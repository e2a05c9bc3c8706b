from typing import Literal

import torch
from pydantic import Field

from merges.linalg import psd_pinv_right
from merges.registry import Params, TensorTask, register


class ActMatParams(Params):
    solver: Literal["fp64_eigh", "fp32_pinv"] = Field(
        "fp64_eigh",
        description="fp64_eigh: accurate A⁺ by fp64 eigh with relative cut rtol; "
        "fp32_pinv: the authors' torch.linalg.pinv in fp32 with default tolerances",
    )
    rtol: float = Field(
        1e-10, gt=0, description="fp64_eigh: eigenvalues ≤ rtol·λ_max of Σ_t C_t are dropped"
    )


def delta_times_cov(d: torch.Tensor) -> torch.Tensor:
    """Δ C with C = ΔᵀΔ, computed as (ΔΔᵀ)Δ when m < n (fewer FLOPs)."""
    m, n = d.shape
    return (d @ d.T) @ d if m < n else d @ (d.T @ d)


@register("actmat", ActMatParams)
def actmat(task: TensorTask, p: ActMatParams):
    """ACTMat: Δ* = (Σ_t Δ_t C_t)(Σ_t C_t)⁺ with C_t = Δ_tᵀ Δ_t (arXiv 2604.01329, task-vector form).

    fp64_eigh: products and the PSD solve in fp64 (merges.linalg.psd_pinv_right), each C_t formed
    once (m ≥ n) and reused for Δ_t C_t; fp32_pinv: the authors' fp32 torch.linalg.pinv.
    """
    if p.solver == "fp32_pinv":
        d = task.deltas.float()
        num = sum(delta_times_cov(x) for x in d)
        den = sum(x.T @ x for x in d)
        return num @ torch.linalg.pinv(den)
    m, n = task.deltas.shape[1:]
    num, den = None, None
    for x in task.deltas:
        x = x.to(torch.float64)
        c = x.T @ x
        term = x @ c if m >= n else (x @ x.T) @ x
        num = term if num is None else num.add_(term)
        den = c if den is None else den.add_(c)
        del c, term
    merged, rank = psd_pinv_right(num, den, p.rtol)
    task.info["rank_kept"] = rank
    return merged.to(task.deltas.dtype)
