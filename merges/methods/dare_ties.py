from typing import Literal

from pydantic import Field, model_validator

from merges import gta
from merges.factor_merge import factors_only, merge_factors
from merges.methods.dare_linear import DareLinearParams, drop_and_rescale, drop_factors_
from merges.methods.ties import Majority, check_peft_options, majority_field, peft_disjoint
from merges.registry import FactoredTask, TensorTask, expert_values, register, register_factored


class DareTiesParams(DareLinearParams):
    normalize: bool = Field(
        False,
        description="divide by the agreeing experts' summed weights (variant peft: their number; "
        "mergekit's default: no)",
    )
    variant: Literal["mergekit", "peft"] = Field(
        "mergekit",
        description="mergekit: γ = sign⁺ Σ_t δ_t of the weighted δ_t; peft: PEFT's dare_ties "
        "(γ from the unweighted δ_t by `majority`, ÷ the number agreeing with normalize)",
    )
    majority: Majority = majority_field()

    @model_validator(mode="after")
    def _peft_options(self):
        check_peft_options(self)
        return self


@register("dare_ties", DareTiesParams, matrix_only=False)
def dare_ties(task: TensorTask, p: DareTiesParams):
    """DARE-TIES (Yu et al., arXiv 2311.03099; mergekit `dare_ties`): δ_t = w_t · M_t ⊙ Δ_t / p_t as
    in dare_linear, then TIES's sign election: Δ* = λ Σ_t [sign δ_t = γ] δ_t, γ = sign⁺(Σ_t δ_t).

    variant: peft is PEFT's merge_utils.dare_ties (its `dare_ties_svd` before the SVD); with
    on: factors it acts on the stacked LoRA factors B_t and A_t separately (PEFT's `dare_ties`).
    """
    if p.on == "factors":
        return factors_only(task, "dare_ties")
    sparse = drop_and_rescale(task, p)
    if p.variant == "peft":
        weights = expert_values(p.weight, sparse.shape[0])
        return peft_disjoint(sparse, weights, p.majority, p.normalize).mul_(p.scale)
    return gta.combine(task, sparse, p, consensus=True)


@register_factored("dare_ties")
def dare_ties_factored(task: FactoredTask, p: DareTiesParams):
    """on: factors only (on: delta takes the dense path)."""
    if p.on != "factors":
        return None

    def combine(stack, coeffs, side):
        drop_factors_(task.name, stack, side, p)
        return peft_disjoint(stack, coeffs, p.majority, p.normalize)

    weights = expert_values(p.weight, len(task.factors))
    return merge_factors(task, "dare_ties", weights, combine, record=True).mul_(p.scale)
