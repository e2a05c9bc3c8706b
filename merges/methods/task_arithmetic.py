"""Task Arithmetic (and, with `on: factors`, PEFT's `linear` on LoRA factors: merges.factor_merge)."""

from pydantic import Field

from merges.factor_merge import On, factors_only, merge_factors, normalized, on_field, weighted_sum
from merges.registry import (
    FactoredTask,
    Params,
    PerExpert,
    TensorTask,
    expert_values,
    per_expert,
    register,
    register_factored,
)


class TaskArithmeticParams(Params):
    scale: float = Field(0.4, description="λ in Δ* = λ Σ_t w_t Δ_t (0.4: the Table 1 setting)")
    weight: PerExpert() = per_expert(1.0, "w_t (mergekit's weight)")
    normalize: bool = Field(False, description="divide by Σ_t w_t (mergekit's normalize)")
    on: On = on_field()


@register("task_arithmetic", TaskArithmeticParams, matrix_only=False, elementwise=True)
def task_arithmetic(task: TensorTask, p: TaskArithmeticParams):
    """Task Arithmetic: Δ* = λ Σ_t w_t Δ_t (Ilharco et al. 2023, arXiv 2212.04089), or
    λ Σ_t w_t Δ_t / Σ_t w_t with normalize (a sum below 1e-8 in magnitude counts as 1, as mergekit).

    on: factors (LoRA experts): PEFT's `linear`, Δ* = λ (Σ_t √|w_t| B_t)(Σ_t sign(w_t)√|w_t| A_t).
    """
    if p.on == "factors":
        return factors_only(task, "task_arithmetic")
    w = expert_values(p.weight, task.deltas.shape[0])
    if all(x == 1 for x in w) and not p.normalize:
        return p.scale * task.deltas.sum(0)
    merged = sum(x * d for x, d in zip(w, task.deltas, strict=True))
    if p.normalize and abs(sum(w)) >= 1e-8:
        merged = merged / sum(w)
    return p.scale * merged


@register_factored("task_arithmetic")
def task_arithmetic_factored(task: FactoredTask, p: TaskArithmeticParams):
    """on: factors only (on: delta takes the dense path): PEFT's `linear` on the LoRA factors."""
    if p.on != "factors":
        return None
    w = normalized(expert_values(p.weight, len(task.factors)), p.normalize)
    return merge_factors(task, "task_arithmetic", w, lambda x, c, _: weighted_sum(x, c)) * p.scale
