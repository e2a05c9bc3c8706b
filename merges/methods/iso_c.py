from pydantic import Field

from merges.linalg import polar_and_singular_values
from merges.registry import Params, TensorTask, register


class IsoCParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·s̄·U Vᵀ")


@register("iso_c", IsoCParams)
def iso_c(task: TensorTask, p: IsoCParams):
    """Iso-C: Σ_t Δ_t = U S Vᵀ, Δ* = α·mean(S)·U Vᵀ over all r singular values (Marczak et al. 2025).

    U Vᵀ and S in factor_dtype (via Gram eigh where accurate, see merges.linalg); the result in fp32.
    """
    ta = task.deltas.sum(0, dtype=task.factor_dtype)
    pol, s = polar_and_singular_values(ta)
    return (p.scale * s.mean() * pol).to(task.deltas.dtype)
