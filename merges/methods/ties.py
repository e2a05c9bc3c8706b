from typing import Literal

import torch
from pydantic import Field

from merges import gta
from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert, register


class TiesParams(Params):
    density: PerExpert(gt=0, le=1) = per_expert(0.2, "fraction K of |τ_t| kept by the trim")
    scale: float = Field(1.0, description="λ applied to the disjoint mean")
    weight: PerExpert() = per_expert(1.0, "w_t multiplying the trimmed τ_t (mergekit's weight)")
    normalize: bool = Field(
        True, description="disjoint mean: ÷ the agreeing experts' summed weights (False: their sum)"
    )
    variant: Literal["official", "mergekit"] = Field(
        "official",
        description="official: the authors' code (keep every |τ| ≥ the k-th value, zero signs take "
        "the tensor's majority); mergekit: exactly k kept by argsort, zero signs count as +",
    )


def kth_smallest_abs(x: torch.Tensor, k: int) -> torch.Tensor:
    """kthvalue(|x|, k) (1-based), exactly, in O(1) extra memory: non-negative floats order like
    their bit patterns, so a histogram of the high 16 bits finds the k-th value's high half and a
    histogram of the low 16 bits of the entries sharing it finds the low half (radix select)."""
    flat, step, bins = x.reshape(-1), 1 << 22, 1 << 16

    def histogram(high: int | None) -> torch.Tensor:
        hist = torch.zeros(bins, dtype=torch.int64, device=x.device)
        for s in range(0, flat.numel(), step):
            bits = flat[s : s + step].abs().view(torch.int32)
            part = bits >> 16 if high is None else bits[(bits >> 16) == high] & (bins - 1)
            hist += torch.bincount(part, minlength=bins)
        return hist.cumsum(0)

    cum = histogram(None)
    high = int(torch.searchsorted(cum, k))
    rank = k - (int(cum[high - 1]) if high else 0)
    low = int(torch.searchsorted(histogram(high), rank))
    return torch.tensor([(high << 16) | low], dtype=torch.int32).view(torch.float32)[0].to(x.device)


def trim_top_(x: torch.Tensor, density: float) -> torch.Tensor:
    """In place, the official `topk_values_mask`: kth = kthvalue(|x|, d − int(d·density)), keep
    |x| ≥ kth. As in the official code this keeps int(d·density) + 1 entries (plus ties)."""
    d = x.numel()
    kth = kth_smallest_abs(x, max(d - int(d * density), 1))
    flat, step = x.view(-1), 1 << 22
    for s in range(0, d, step):
        part = flat[s : s + step]
        part.masked_fill_(part.abs() < kth, 0)
    return x


def elect_and_disjoint_mean(
    t: torch.Tensor, weights: list[float] | None = None, normalize: bool = True
) -> torch.Tensor:
    """TIES steps 2-3: γ = sign(Σ_t τ_t) (zeros → majority sign), mean of the agreeing nonzeros
    (weighted: Σ k_t τ_t / Σ k_t w_t, 0 → 1, for τ_t already multiplied by w_t; unnormalised: the sum).

    After γ, every row is independent, so the mean is formed in row blocks, in γ's memory.
    """
    gamma = t.sum(0).sign_()
    gamma.masked_fill_(gamma == 0, torch.sign(gamma.sum()))
    if gamma.numel() == 0:
        return gamma
    g2 = gamma.reshape(gamma.shape[0] if gamma.dim() else 1, -1)
    t2 = t.reshape(t.shape[0], *g2.shape)
    step = max(1, (1 << 20) // g2.shape[1])
    for r0 in range(0, g2.shape[0], step):  # each block's mean overwrites its γ rows
        tb, gb = t2[:, r0 : r0 + step], g2[r0 : r0 + step]
        keep = ((gb > 0) & (tb > 0)) | ((gb < 0) & (tb < 0))
        kept = torch.where(keep, tb, 0.0).sum(0)
        if not normalize:
            gb.copy_(kept)
        elif weights is None:
            gb.copy_(kept / keep.sum(0).clamp_min(1))
        else:
            w = torch.tensor(weights, dtype=tb.dtype, device=tb.device).view(-1, 1, 1)
            divisor = (keep * w).sum(0)
            gb.copy_(kept / torch.where(divisor == 0, 1.0, divisor))
    return gamma


@register("ties", TiesParams, matrix_only=False)
def ties(task: TensorTask, p: TiesParams):
    """TIES: trim each τ_t to its top-K |entries| (per tensor), elect signs, disjoint mean, ×λ
    (Yadav et al. 2023, arXiv 2306.01708; official code prdy/ties-merging); per-expert K and w_t
    as in mergekit's `ties`, whose tie and zero-sign rules `variant: mergekit` selects."""
    n = task.deltas.shape[0]
    density, weights = expert_values(p.density, n), expert_values(p.weight, n)
    if p.variant == "mergekit":
        trimmed = gta.sparsify_each(task, p, lambda t, d, k: gta.top_k_exact(d, k))
        return gta.combine(task, trimmed, p, consensus=True)
    for d, k, w in zip(task.deltas, density, weights, strict=True):  # in place: the engine is done
        trim_top_(d, k).mul_(w)
    gta.record_nonzero(task, task.deltas)
    plain = all(w == 1 for w in weights)
    merged = elect_and_disjoint_mean(task.deltas, None if plain else weights, p.normalize)
    return merged.mul_(p.scale)
