import torch
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
from merges.methods.dare import dare_mask
from merges.registry import (
    FactoredTask,
    PerExpert,
    TensorTask,
    expert_values,
    per_expert,
    register,
    register_factored,
)


class DareLinearParams(gta.GtaParams):
    density: PerExpert(gt=0, le=1) = per_expert(0.5, "keep probability 1 − p of each entry")
    rescale: gta.Rescale = Field(
        "inverse",
        description="inverse: ÷ density (the DARE paper's code); l1: match ‖Δ_t‖₁ (mergekit); none",
    )
    normalize: bool = Field(False, description="divide by the experts' summed weights")
    seed: int = Field(
        0,
        ge=0,
        description="base seed; expert t, tensor NAME use seed + 1000·t + crc32(NAME) "
        "(on: factors, its factors NAME:left and NAME:right)",
    )
    on: On = on_field()


def drop_and_rescale(task: TensorTask, p) -> torch.Tensor:
    """δ_t = rescale(M_t ⊙ Δ_t), M_t ~ Bernoulli(density_t), seeded per expert and tensor."""

    def one(t, d, density):
        if density >= 1:
            return d
        keep = dare_mask(d.shape, 1 - density, gta.task_seed(p.seed, t, task.name)).to(d.device)
        return gta.drop_(d, keep, p.rescale, density)

    return gta.sparsify_each(task, p, one)


def drop_factors_(name: str, stack: torch.Tensor, side: str, p) -> torch.Tensor:
    """In place, the DARE drop of each expert's factor in a stack [T, ...] (PEFT's
    `random_pruning`), the mask seeded by expert and NAME:side ("left" B_t, "right" A_t)."""
    densities = expert_values(p.density, stack.shape[0])
    for t, (x, density) in enumerate(zip(stack, densities, strict=True)):
        if density < 1:
            seed = gta.task_seed(p.seed, t, f"{name}:{side}")
            gta.drop_(x, dare_mask(x.shape, 1 - density, seed).to(x.device), p.rescale, density)
    return stack


@register("dare_linear", DareLinearParams, matrix_only=False)
def dare_linear(task: TensorTask, p: DareLinearParams):
    """DARE-linear (Yu et al., arXiv 2311.03099; mergekit `dare_linear`): δ_t = w_t · M_t ⊙ Δ_t / p_t,
    M_t ~ Bernoulli(p_t = density_t); Δ* = λ Σ_t δ_t (÷ Σ_t w_t with normalize).

    on: factors (LoRA experts): PEFT's `dare_linear`, the drop and the weighted sum applied to the
    stacked factors B_t (weights √|w_t|) and A_t (sign(w_t)√|w_t|) separately, Δ* = λ B*·A*.
    """
    if p.on == "factors":
        return factors_only(task, "dare_linear")
    return gta.combine(task, drop_and_rescale(task, p), p, consensus=False)


@register_factored("dare_linear")
def dare_linear_factored(task: FactoredTask, p: DareLinearParams):
    """on: factors only (on: delta takes the dense path)."""
    if p.on != "factors":
        return None
    w = normalized(expert_values(p.weight, len(task.factors)), p.normalize)

    def combine(stack, coeffs, side):
        return weighted_sum(drop_factors_(task.name, stack, side, p), coeffs)

    return merge_factors(task, "dare_linear", w, combine, record=True).mul_(p.scale)
