import torch
from pydantic import Field

from merges.errors import MergeInputError
from merges.linalg import spd_solve_right
from merges.registry import Params, TensorTask, register


class RegMeanParams(Params):
    alpha: float = Field(
        0.9, ge=0, le=1, description="off-diagonal scale: G̃ = α·G + (1 − α)·Diag(G)"
    )


@register("regmean", RegMeanParams, needs_stats=True)
def regmean(task: TensorTask, p: RegMeanParams):
    """RegMean: Δ* = (Σ_t Δ_t G̃_t)(Σ_t G̃_t)⁻¹, task-vector form, fp64 Cholesky (Jin et al. 2023)."""
    if task.grams is None:
        raise MergeInputError(
            f"regmean needs an input Gram for {task.name}; pass --stats per expert"
        )
    fd = task.factor_dtype
    num, den = None, None
    for d, g in zip(task.deltas, task.grams, strict=True):
        g = g.to(fd)
        gt = p.alpha * g + (1 - p.alpha) * torch.diag(torch.diagonal(g))
        term = d.to(fd) @ gt
        num = term if num is None else num + term
        den = gt if den is None else den + gt
    merged, ridge = spd_solve_right(num, den)
    task.info["ridge"] = ridge
    return merged.to(task.deltas.dtype)
