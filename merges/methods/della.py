import torch
from pydantic import Field

from merges import gta
from merges.registry import PerExpert, TensorTask, expert_values, per_expert, register


class DellaParams(gta.GtaParams):
    density: PerExpert(gt=0, le=1) = per_expert(0.7, "mean keep probability")
    epsilon: PerExpert(ge=0, lt=0.5) = per_expert(0.07, "keep probabilities span density ± epsilon")
    rescale: gta.Rescale = Field(
        "inverse",
        description="inverse: ÷ each entry's keep probability; l1: match ‖Δ_t‖₁ (mergekit)",
    )
    normalize: bool = Field(True, description="divide by the agreeing experts' summed weights")
    seed: int = Field(
        0, ge=0, description="base seed; expert t, tensor NAME use seed + 1000·t + crc32(NAME)"
    )


def keep_probabilities(d: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """MAGPRUNE: in each row (a 1-D tensor is one row), the entry of magnitude rank r (1 = smallest)
    of n is kept with p = density − ε + 2ε (r − 1)/(n − 1). Ranked in row blocks."""
    prob = torch.empty_like(d)
    for block, out in zip(gta.row_blocks(d), gta.row_blocks(prob), strict=True):
        n = block.shape[1]
        ranks = torch.argsort(torch.argsort(block.abs(), dim=1), dim=1).to(torch.float32)
        frac = ranks / (n - 1) if n > 1 else torch.zeros_like(ranks)
        out.copy_((density - epsilon) + 2 * epsilon * frac)
    return prob


def magprune(task: TensorTask, p) -> torch.Tensor:
    eps = expert_values(p.epsilon, task.deltas.shape[0])

    def one(t, d, density):
        if density >= 1:
            return d
        gta.check_window(density, eps[t], f"{task.name}: della")
        prob = keep_probabilities(d, density, eps[t])
        keep = gta.uniform(d.shape, gta.task_seed(p.seed, t, task.name), d.device) < prob
        return gta.drop_(d, keep, p.rescale, prob if p.rescale == "inverse" else density)

    return gta.sparsify_each(task, p, one)


@register("della", DellaParams, matrix_only=False)
def della(task: TensorTask, p: DellaParams):
    """DELLA (Deep et al., arXiv 2406.11617; mergekit `della`): MAGPRUNE drops each entry with a
    probability that falls with its magnitude rank, rescales the survivors, then TIES's sign
    election: Δ* = λ Σ_t [sign δ_t = γ] δ_t / Σ_t [sign δ_t = γ] w_t."""
    return gta.combine(task, magprune(task, p), p, consensus=True)
