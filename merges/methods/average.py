from merges.registry import Params, TensorTask, register


class AverageParams(Params):
    pass


@register("average", AverageParams, matrix_only=False, elementwise=True)
def average(task: TensorTask, p: AverageParams):
    """Weight averaging: Δ* = (1/T) Σ_t Δ_t (Wortsman et al. 2022; TA with λ = 1/T)."""
    return task.deltas.mean(0)
