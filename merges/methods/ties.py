import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class TiesParams(Params):
    density: float = Field(0.2, gt=0, le=1, description="fraction K of |τ_t| kept by the trim")
    scale: float = Field(1.0, description="λ applied to the disjoint mean")


def trim_top_(x: torch.Tensor, density: float) -> torch.Tensor:
    """In place, the official `topk_values_mask`: kth = kthvalue(|x|, d − int(d·density)), keep
    |x| ≥ kth. As in the official code this keeps int(d·density) + 1 entries (plus ties)."""
    a = x.abs()
    d = a.numel()
    k = max(d - int(d * density), 1)
    kth = torch.kthvalue(a.flatten().cpu(), k).values.to(x.device)
    return x.masked_fill_(a < kth, 0)


def elect_and_disjoint_mean(t: torch.Tensor) -> torch.Tensor:
    """TIES steps 2-3: γ = sign(Σ_t τ_t) (zeros → majority sign), mean of the agreeing nonzeros.

    After γ, every row is independent, so the mean is formed in row blocks (bounded memory).
    """
    gamma = torch.sign(t.sum(0))
    gamma = torch.where(gamma == 0, torch.sign(gamma.sum()), gamma)
    if gamma.numel() == 0:
        return gamma
    g2 = gamma.reshape(gamma.shape[0] if gamma.dim() else 1, -1)
    t2 = t.reshape(t.shape[0], *g2.shape)
    out = torch.empty_like(g2)
    step = max(1, (1 << 22) // g2.shape[1])
    for r0 in range(0, g2.shape[0], step):
        tb, gb = t2[:, r0 : r0 + step], g2[r0 : r0 + step]
        keep = ((gb > 0) & (tb > 0)) | ((gb < 0) & (tb < 0))
        kept = torch.where(keep, tb, torch.zeros_like(tb))
        out[r0 : r0 + step] = kept.sum(0) / keep.sum(0).clamp_min(1)
    return out.reshape(gamma.shape)


@register("ties", TiesParams, matrix_only=False)
def ties(task: TensorTask, p: TiesParams):
    """TIES: trim each τ_t to its top-K |entries| (per tensor), elect signs, disjoint mean, ×λ (Yadav et al. 2023)."""
    for d in task.deltas:  # in place: the engine is done with the task vectors
        trim_top_(d, p.density)
    task.info["nonzero_frac"] = [
        int(torch.count_nonzero(d)) / max(1, d.numel()) for d in task.deltas
    ]
    return p.scale * elect_and_disjoint_mean(task.deltas)
