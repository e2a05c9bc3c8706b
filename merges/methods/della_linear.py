from pydantic import Field

from merges import gta
from merges.methods.della import DellaParams, magprune
from merges.registry import TensorTask, register


class DellaLinearParams(DellaParams):
    normalize: bool = Field(False, description="divide by the experts' summed weights")


@register("della_linear", DellaLinearParams, matrix_only=False)
def della_linear(task: TensorTask, p: DellaLinearParams):
    """DELLA without sign election (mergekit `della_linear`): Δ* = λ Σ_t w_t MAGPRUNE(Δ_t)."""
    return gta.combine(task, magprune(task, p), p, consensus=False)
