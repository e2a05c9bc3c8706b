from typing import Literal

import torch
from pydantic import Field

from merges.errors import MergeInputError
from merges.linalg import spd_solve_right
from merges.registry import Params, TensorTask, register


class RegMeanParams(Params):
    alpha: float = Field(
        0.9, ge=0, le=1, description="off-diagonal scale: G̃ = α·G + (1 − α)·Diag(G)"
    )
    solver: Literal["fp64_cholesky", "fp32_pinv"] = Field(
        "fp64_cholesky",
        description="fp64_cholesky: Cholesky solve in factor_dtype (float64 by default), relative "
        "ridge only if it fails; fp32_pinv: the ACTMat authors' fp32 torch.linalg.pinv with default "
        "tolerances (their recipe also has alpha=1)",
    )


def _reduce_off_diagonal(g: torch.Tensor, alpha: float) -> torch.Tensor:
    """G̃ = α·G + (1 − α)·Diag(G), in place on g (a copy the caller owns)."""
    diag = g.diagonal().clone()
    g.mul_(alpha).diagonal().add_((1 - alpha) * diag)
    return g


@register("regmean", RegMeanParams, needs_stats=True)
def regmean(task: TensorTask, p: RegMeanParams):
    """RegMean: Δ* = (Σ_t Δ_t G̃_t)(Σ_t G̃_t)⁻¹, task-vector form, fp64 Cholesky (Jin et al. 2023).

    fp64_cholesky: G̃_t, the products and the Cholesky solve (merges.linalg.spd_solve_right) in
    factor_dtype. fp32_pinv: the ACTMat authors' `merge_regmean`, (Σ_t Δ_t G̃_t) @ pinv(Σ_t G̃_t)
    with fp32 G̃_t, fp32 products and torch.linalg.pinv (default rtol = n·ε_fp32).
    """
    if task.grams is None:
        raise MergeInputError(
            f"regmean needs an input Gram for {task.name}; pass --stats per expert"
        )
    if p.solver == "fp32_pinv":
        d = task.deltas.float()
        g = torch.stack([x.to(d.device, torch.float32) for x in task.grams])
        if p.alpha != 1:
            for x in g:
                _reduce_off_diagonal(x, p.alpha)
        return (d @ g).sum(dim=0) @ torch.linalg.pinv(g.sum(dim=0))
    fd = task.factor_dtype
    num, den = None, None
    for d, g in zip(task.deltas, task.grams, strict=True):
        gt = _reduce_off_diagonal(g.to(fd, copy=True), p.alpha)
        term = d.to(fd) @ gt
        num = term if num is None else num.add_(term)
        den = gt if den is None else den.add_(gt)
        del gt, term
    merged, ridge = spd_solve_right(num, den)
    task.info["ridge"] = ridge
    return merged.to(task.deltas.dtype)
