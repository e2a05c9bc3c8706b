from pydantic import Field, model_validator

from merges.errors import MergeInputError
from merges.factor_merge import On, factors_only, merge_factors, on_field, weighted_sum
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


class LinearParams(Params):
    weight: PerExpert() = per_expert(1.0, "w_t: the expert's weight")
    normalize: bool = Field(True, description="divide by Σ_t w_t (a weighted mean)")
    on: On = on_field()

    @model_validator(mode="after")
    def _factors_normalized(self):
        if self.on == "factors" and not self.normalize:
            raise ValueError(
                "on: factors needs normalize: true (unnormalised linear adds (Σ w_t − 1)·W_0, "
                "which no LoRA factor holds); task_arithmetic with on: factors and scale 1 is "
                "PEFT's linear for any weights"
            )
        return self


def _total(w: list[float]) -> float:
    if sum(w) == 0:
        raise MergeInputError("linear: the weights sum to 0; normalize: false or other weights")
    return sum(w)


@register("linear", LinearParams, matrix_only=False, elementwise=True, needs_base=True)
def linear(task: TensorTask, p: LinearParams):
    """Linear (Model Soups, arXiv 2203.05482; mergekit `linear`): W* = Σ_t w_t W_t / Σ_t w_t, or
    Σ_t w_t W_t unnormalised, i.e. Δ* = Σ_t w_t Δ_t / Σ_t w_t, or (Σ_t w_t − 1) W_0 + Σ_t w_t Δ_t.

    on: factors (LoRA experts, normalized): PEFT's `linear` with the weights v_t = w_t / Σ_t w_t,
    Δ* = (Σ_t √|v_t| B_t)(Σ_t sign(v_t)√|v_t| A_t).
    """
    if p.on == "factors":
        return factors_only(task, "linear")
    w = expert_values(p.weight, task.deltas.shape[0])
    merged = sum(wt * d for wt, d in zip(w, task.deltas, strict=True))
    if p.normalize:
        return merged / _total(w)
    return merged + (sum(w) - 1.0) * task.base


@register_factored("linear")
def linear_factored(task: FactoredTask, p: LinearParams):
    """on: factors only (on: delta takes the dense path): PEFT's `linear` on the LoRA factors."""
    if p.on != "factors":
        return None
    w = expert_values(p.weight, len(task.factors))
    v = [x / _total(w) for x in w]
    return merge_factors(task, "linear", v, lambda x, c, _: weighted_sum(x, c))
