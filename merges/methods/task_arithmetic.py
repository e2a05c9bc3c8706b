from pydantic import Field

from merges.registry import Params, TensorTask, register


class TaskArithmeticParams(Params):
    scale: float = Field(0.4, description="λ in Δ* = λ Σ_t Δ_t (0.4: the Table 1 setting)")


@register("task_arithmetic", TaskArithmeticParams, matrix_only=False, elementwise=True)
def task_arithmetic(task: TensorTask, p: TaskArithmeticParams):
    """Task Arithmetic: Δ* = λ Σ_t Δ_t (Ilharco et al. 2023)."""
    return p.scale * task.deltas.sum(0)
