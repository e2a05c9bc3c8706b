from pydantic import Field

from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert, register


class TaskArithmeticParams(Params):
    scale: float = Field(0.4, description="λ in Δ* = λ Σ_t w_t Δ_t (0.4: the Table 1 setting)")
    weight: PerExpert() = per_expert(1.0, "w_t (mergekit's weight)")


@register("task_arithmetic", TaskArithmeticParams, matrix_only=False, elementwise=True)
def task_arithmetic(task: TensorTask, p: TaskArithmeticParams):
    """Task Arithmetic: Δ* = λ Σ_t w_t Δ_t (Ilharco et al. 2023, arXiv 2212.04089)."""
    w = expert_values(p.weight, task.deltas.shape[0])
    if all(x == 1 for x in w):
        return p.scale * task.deltas.sum(0)
    return p.scale * sum(x * d for x, d in zip(w, task.deltas, strict=True))
