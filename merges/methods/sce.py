from typing import Literal

import torch
from pydantic import Field

from merges.gta import agrees, positive_majority
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
    keep = None
    if p.select_topk < 1:
        var = torch.var(d, dim=0, unbiased=False).reshape(-1)
        k = int(int(torch.count_nonzero(var)) * p.select_topk)
        keep = torch.zeros_like(var)
        if k:
            keep[torch.topk(var, k=k).indices] = 1
        keep = keep.view(d.shape[1:])
        del var
    w = []  # mean(S ⊙ Δ_t²); mergekit's variant zeroes the unselected entries of Δ_t first
    for x in d:
        if keep is not None and not official:
            x.mul_(keep)
        w.append(float((x * keep if keep is not None and official else x).square().mean()))
    total = sum(w)
    uniform = total == 0 if official else abs(total) < 1e-6
    w = [1 / len(w)] * len(w) if uniform else [x / total for x in w]
    task.info["weights"] = [round(x, 6) for x in w]
    positive = positive_majority(d)
    merged, den = torch.zeros_like(d[0]), torch.zeros_like(d[0])
    for x, wt in zip(d, w, strict=True):
        e = agrees(x, positive)
        merged.add_(x.masked_fill_(~e, 0).mul_(wt))
        den.add_(e, alpha=wt)
    den = den.masked_fill_(den == 0, 1) if official else den.clamp_(min=1e-6)
    return merged.div_(den)
