from pydantic import Field

from merges.errors import MergeInputError
from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert, register


class LinearParams(Params):
    weight: PerExpert() = per_expert(1.0, "w_t: the expert's weight")
    normalize: bool = Field(True, description="divide by Σ_t w_t (a weighted mean)")


@register("linear", LinearParams, matrix_only=False, elementwise=True, needs_base=True)
def linear(task: TensorTask, p: LinearParams):
    """Linear (Model Soups, arXiv 2203.05482; mergekit `linear`): W* = Σ_t w_t W_t / Σ_t w_t, or
    Σ_t w_t W_t unnormalised, i.e. Δ* = Σ_t w_t Δ_t / Σ_t w_t, or (Σ_t w_t − 1) W_0 + Σ_t w_t Δ_t."""
    w = expert_values(p.weight, task.deltas.shape[0])
    merged = sum(wt * d for wt, d in zip(w, task.deltas, strict=True))
    if p.normalize:
        if sum(w) == 0:
            raise MergeInputError("linear: the weights sum to 0; normalize: false or other weights")
        return merged / sum(w)
    return merged + (sum(w) - 1.0) * task.base
