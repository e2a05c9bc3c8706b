import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class IsoCParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·s̄·U Vᵀ")


@register("iso_c", IsoCParams)
def iso_c(task: TensorTask, p: IsoCParams):
    """Iso-C: Σ_t Δ_t = U S Vᵀ, Δ* = α·mean(S)·U Vᵀ over all r singular values (Marczak et al. 2025)."""
    ta = task.deltas.to(task.factor_dtype).sum(0)
    u, s, vh = torch.linalg.svd(ta, full_matrices=False)
    return (p.scale * s.mean() * (u @ vh)).to(task.deltas.dtype)
