from pydantic import Field

from merges import gta
from merges.methods.dare_linear import DareLinearParams, drop_and_rescale
from merges.registry import TensorTask, register


class DareTiesParams(DareLinearParams):
    normalize: bool = Field(
        False, description="divide by the agreeing experts' summed weights (mergekit's default: no)"
    )


@register("dare_ties", DareTiesParams, matrix_only=False)
def dare_ties(task: TensorTask, p: DareTiesParams):
    """DARE-TIES (Yu et al., arXiv 2311.03099; mergekit `dare_ties`): δ_t = w_t · M_t ⊙ Δ_t / p_t as
    in dare_linear, then TIES's sign election: Δ* = λ Σ_t [sign δ_t = γ] δ_t, γ = sign⁺(Σ_t δ_t)."""
    return gta.combine(task, drop_and_rescale(task, p), p, consensus=True)
