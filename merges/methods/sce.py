from typing import Literal

import torch
from pydantic import Field

from merges.gta import consensus_mask
from merges.registry import Params, TensorTask, register


class SceParams(Params):
    select_topk: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of the entries with nonzero variance across experts kept",
    )
    variant: Literal["official", "mergekit"] = Field(
        "official",
        description="official (FuseChat's code): the selection only sets the weights, the merge "
        "uses every entry; mergekit: unselected entries keep W_0, and weights fall back to uniform "
        "when Σ_t mean(Δ_t²) < 1e-6",
    )


@register("sce", SceParams, matrix_only=False)
def sce(task: TensorTask, p: SceParams):
    """SCE (FuseChat, arXiv 2408.07990; fanqiwan/FuseAI; mergekit `sce`): Select the top-k entries
    by variance of Δ_t across experts (k = int(select_topk · #nonzero variances)); Calculate
    w_t = mean(S ⊙ Δ_t²) / Σ_s mean(S ⊙ Δ_s²); Erase entries whose sign disagrees with
    γ = sign⁺(Σ_t Δ_t); Δ* = Σ_t e_t w_t Δ_t / Σ_t e_t w_t (0 → 1)."""
    d, official = task.deltas, p.variant == "official"
    selected = d
    if p.select_topk < 1:
        var = torch.var(d, dim=0, unbiased=False).reshape(-1)
        k = int(int(torch.count_nonzero(var)) * p.select_topk)
        keep = torch.zeros_like(var)
        if k:
            keep[torch.topk(var, k=k).indices] = 1
        selected = d * keep.view(d.shape[1:])
    if not official:
        d = selected
    keep_sign = consensus_mask(d)
    w = selected.square().reshape(d.shape[0], -1).mean(1)
    total = float(w.sum())
    uniform = total == 0 if official else abs(total) < 1e-6
    w = torch.full_like(w, 1 / w.numel()) if uniform else w / total
    task.info["weights"] = [round(float(x), 6) for x in w]
    ew = w.view(-1, *([1] * (d.dim() - 1))) * keep_sign
    den = ew.sum(0)
    den = torch.where(den == 0, 1.0, den) if official else den.clamp(min=1e-6)
    return (d * ew).sum(0) / den
