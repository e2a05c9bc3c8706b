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
    """RegMean: Δ* = (Σ_t Δ_t G̃_t)(Σ_t G̃_t)⁻¹, task-vector form, fp64 Cholesky (Jin et al. 2023).

    G̃_t, the products and the Cholesky solve (merges.linalg.spd_solve_right) in factor_dtype.
    """
    if task.grams is None:
        raise MergeInputError(
            f"regmean needs an input Gram for {task.name}; pass --stats per expert"
        )
    fd = task.factor_dtype
    num, den = None, None
    for d, g in zip(task.deltas, task.grams, strict=True):
        gt = g.to(fd, copy=True)
        diag = gt.diagonal().clone()
        gt.mul_(p.alpha).diagonal().add_((1 - p.alpha) * diag)
        term = d.to(fd) @ gt
        num = term if num is None else num.add_(term)
        den = gt if den is None else den.add_(gt)
        del gt, term
    merged, ridge = spd_solve_right(num, den)
    task.info["ridge"] = ridge
    return merged.to(task.deltas.dtype)
