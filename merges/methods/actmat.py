from typing import Literal

import torch
from pydantic import Field

from merges.linalg import expand, factor_span, psd_pinv_right, xtx, xxt
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored


class ActMatParams(Params):
    solver: Literal["fp64_eigh", "fp32_pinv"] = Field(
        "fp64_eigh",
        description="fp64_eigh: accurate A⁺ by fp64 eigh with relative cut rtol; "
        "fp32_pinv: the authors' torch.linalg.pinv in fp32 with default tolerances",
    )
    rtol: float = Field(
        1e-10, gt=0, description="fp64_eigh: eigenvalues ≤ rtol·λ_max of Σ_t C_t are dropped"
    )


@register("actmat", ActMatParams)
def actmat(task: TensorTask, p: ActMatParams):
    """ACTMat: Δ* = (Σ_t Δ_t C_t)(Σ_t C_t)⁺ with C_t = Δ_tᵀ Δ_t (arXiv 2604.01329, task-vector form).

    fp64_eigh: products and the PSD solve in fp64 (merges.linalg.psd_pinv_right), each C_t formed
    once (m ≥ n) and reused for Δ_t C_t. fp32_pinv: the authors' `merge_actmat` (marawangamal/actmat
    src/merging.py): fp32 task vectors, C = Δᵀ Δ batched, (Δ @ C).sum(0) @ torch.linalg.pinv(ΣC)
    with default tolerances (rtol = n·ε_fp32 on the eigenvalues of Σ_t C_t, i.e. singular values of
    the stacked [Δ_1; …; Δ_T] below ≈ √(n·ε_fp32)·σ_max are cut); factor_dtype does not apply to it.
    """
    if p.solver == "fp32_pinv":  # the authors' merge_actmat, operation for operation
        d = task.deltas.float()
        c = d.transpose(1, 2) @ d
        return (d @ c).sum(dim=0) @ torch.linalg.pinv(c.sum(dim=0))
    m, n = task.deltas.shape[1:]
    num, den = None, None
    for x in task.deltas:
        x = x.to(torch.float64)
        c = xtx(x)
        term = x @ c if m >= n else xxt(x) @ x
        num = term if num is None else num.add_(term)
        den = c if den is None else den.add_(c)
        del c, term
    merged, rank = psd_pinv_right(num, den, p.rtol)
    task.info["rank_kept"] = rank
    return merged.to(task.deltas.dtype)


@register_factored("actmat")
def actmat_factored(task: FactoredTask, p: ActMatParams):
    """Δ* = L (Σ_t K_t K_tᵀ K_t) M⁺ Pᵀ with M = Σ_t K_tᵀ K_t, Δ_t = L K_t Pᵀ (merges.linalg.factor_span).

    `actmat` (fp64_eigh) for low-rank experts: range(Σ_t C_t) ⊆ span{A_tᵀ} = range(P), so the
    nonzero eigenvalues of Σ_t C_t are those of M, cut at rtol·λ_max alike (spec §2.10). None for
    fp32_pinv, and for rtol ≤ n·ε_fp64, where the dense eigh keeps rounding noise.
    """
    n = task.shape[1]
    if p.solver != "fp64_eigh" or p.rtol <= n * torch.finfo(torch.float64).eps:
        return None
    left, right, cores = factor_span(task.factors)
    num, den = None, None
    for b, a in cores:
        k = b @ a
        c = k.T @ k
        num = k @ c if num is None else num.add_(k @ c)
        den = c if den is None else den.add_(c)
    core, rank = psd_pinv_right(num, den, p.rtol)
    task.info["rank_kept"] = rank
    return expand(left, core, right)
