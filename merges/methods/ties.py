import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class TiesParams(Params):
    density: float = Field(0.2, gt=0, le=1, description="fraction K of |τ_t| kept by the trim")
    scale: float = Field(1.0, description="λ applied to the disjoint mean")


def trim_top(x: torch.Tensor, density: float) -> torch.Tensor:
    """Official `topk_values_mask`: kth = kthvalue(|x|, d − int(d·density)), keep |x| ≥ kth.

    As in the official code this keeps int(d·density) + 1 entries (plus ties); density 1 keeps all.
    """
    flat = x.abs().flatten()
    d = flat.numel()
    k = max(d - int(d * density), 1)
    kth = torch.kthvalue(flat.cpu(), k).values.to(x.device)
    return torch.where(x.abs() >= kth, x, torch.zeros_like(x))


def elect_and_disjoint_mean(t: torch.Tensor) -> torch.Tensor:
    """TIES steps 2-3: γ = sign(Σ_t τ_t) (zeros → majority sign), mean of the agreeing nonzeros."""
    gamma = torch.sign(t.sum(0))
    gamma = torch.where(gamma == 0, torch.sign(gamma.sum()), gamma)
    keep = ((gamma > 0) & (t > 0)) | ((gamma < 0) & (t < 0))
    kept = torch.where(keep, t, torch.zeros_like(t))
    return kept.sum(0) / keep.sum(0).clamp_min(1)


@register("ties", TiesParams, matrix_only=False)
def ties(task: TensorTask, p: TiesParams):
    """TIES: trim each τ_t to its top-K |entries| (per tensor), elect signs, disjoint mean, ×λ (Yadav et al. 2023)."""
    trimmed = torch.stack([trim_top(d, p.density) for d in task.deltas])
    task.info["nonzero_frac"] = [float((d != 0).float().mean()) for d in task.deltas]
    return p.scale * elect_and_disjoint_mean(trimmed)
