import torch
from pydantic import Field

from merges import gta
from merges.methods.dare import dare_mask
from merges.registry import PerExpert, TensorTask, per_expert, register


class DareLinearParams(gta.GtaParams):
    density: PerExpert(gt=0, le=1) = per_expert(0.5, "keep probability 1 − p of each entry")
    rescale: gta.Rescale = Field(
        "inverse",
        description="inverse: ÷ density (the DARE paper's code); l1: match ‖Δ_t‖₁ (mergekit); none",
    )
    normalize: bool = Field(False, description="divide by the experts' summed weights")
    seed: int = Field(
        0, ge=0, description="base seed; expert t, tensor NAME use seed + 1000·t + crc32(NAME)"
    )


def drop_and_rescale(task: TensorTask, p) -> torch.Tensor:
    """δ_t = rescale(M_t ⊙ Δ_t), M_t ~ Bernoulli(density_t), seeded per expert and tensor."""

    def one(t, d, density):
        if density >= 1:
            return d
        keep = dare_mask(d.shape, 1 - density, gta.task_seed(p.seed, t, task.name)).to(d.device)
        return gta.drop_(d, keep, p.rescale, density)

    return gta.sparsify_each(task, p, one)


@register("dare_linear", DareLinearParams, matrix_only=False)
def dare_linear(task: TensorTask, p: DareLinearParams):
    """DARE-linear (Yu et al., arXiv 2311.03099; mergekit `dare_linear`): δ_t = w_t · M_t ⊙ Δ_t / p_t,
    M_t ~ Bernoulli(p_t = density_t); Δ* = λ Σ_t δ_t (÷ Σ_t w_t with normalize)."""
    return gta.combine(task, drop_and_rescale(task, p), p, consensus=False)
