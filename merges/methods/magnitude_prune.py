from pydantic import Field

from merges import gta
from merges.factor_merge import (
    On,
    factors_only,
    merge_factors,
    normalized,
    on_field,
    weighted_sum,
)
from merges.methods.ties import trim_exact_
from merges.registry import (
    FactoredTask,
    PerExpert,
    TensorTask,
    expert_values,
    per_expert,
    register,
    register_factored,
)


class MagnitudePruneParams(gta.GtaParams):
    density: PerExpert(gt=0, le=1) = per_expert(
        0.2, "share K of Δ_t kept: exactly int(K·n) entries of largest magnitude per tensor"
    )
    normalize: bool = Field(False, description="divide by Σ_t w_t")
    on: On = on_field()


@register("magnitude_prune", MagnitudePruneParams, matrix_only=False)
def magnitude_prune(task: TensorTask, p: MagnitudePruneParams):
    """Magnitude pruning, then Task Arithmetic (PEFT's `magnitude_prune`): δ_t keeps exactly
    int(K_t·n) entries of largest |Δ_t| per tensor, Δ* = λ Σ_t w_t δ_t (÷ Σ_t w_t with normalize).

    PEFT's `magnitude_prune_svd` before the SVD; on: factors (LoRA experts) prunes and sums the
    stacked factors B_t and A_t separately (PEFT's `magnitude_prune`), Δ* = λ B*·A*. TIES without
    the sign election, and mergekit's `breadcrumbs` per tensor with no outliers dropped (gamma 0).
    """
    if p.on == "factors":
        return factors_only(task, "magnitude_prune")
    pruned = gta.sparsify_each(task, p, lambda t, d, k: trim_exact_(d, k))
    return gta.combine(task, pruned, p, consensus=False)


@register_factored("magnitude_prune")
def magnitude_prune_factored(task: FactoredTask, p: MagnitudePruneParams):
    """on: factors only (on: delta takes the dense path)."""
    if p.on != "factors":
        return None
    n = len(task.factors)
    w = normalized(expert_values(p.weight, n), p.normalize)
    density = expert_values(p.density, n)

    def combine(stack, coeffs, _side):
        for x, k in zip(stack, density, strict=True):
            trim_exact_(x, k)
        return weighted_sum(stack, coeffs)

    return merge_factors(task, "magnitude_prune", w, combine, record=True).mul_(p.scale)
