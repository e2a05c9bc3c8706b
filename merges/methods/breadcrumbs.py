from typing import Literal

import torch
from pydantic import Field

from merges import gta
from merges.registry import PerExpert, TensorTask, expert_values, per_expert, register


class BreadcrumbsParams(gta.GtaParams):
    density: PerExpert(gt=0, le=1) = per_expert(0.9, "share of |Δ_t| kept")
    gamma: PerExpert(ge=0, lt=1) = per_expert(
        0.01, "share of the largest |Δ_t| dropped as outliers"
    )
    rescale: gta.Rescale = Field("none", description="l1: match ‖Δ_t‖₁ after the mask; none")
    variant: Literal["official", "mergekit"] = Field(
        "official",
        description="official: per row (last dim), drop the ⌊gamma·n⌋ largest, keep the next "
        "⌊density·n⌋ (the authors' code); mergekit: the same over the whole tensor, the outlier cut "
        "shrunk when density + gamma > 1",
    )


def keep_mask(d: torch.Tensor, density: float, gamma: float, per_row: bool) -> torch.Tensor:
    """Per row (a 1-D tensor is one row) of n: magnitude ranks [⌊gamma·n⌋, ⌊gamma·n⌋ + ⌊density·n⌋)
    counted from the largest, ranked in row blocks. Over the tensor (mergekit): sort |Δ| ascending
    (torch.sort's order for ties, as mergekit), keep ranks [n_bot, n_bot + ⌊density·n⌋),
    n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋)."""
    keep = torch.zeros(d.shape, dtype=torch.bool, device=d.device)
    if per_row:
        for block, out in zip(gta.row_blocks(d), gta.row_blocks(keep), strict=True):
            n = block.shape[1]
            top, keep_n = int(gamma * n), int(density * n)
            order = torch.argsort(block.abs(), dim=1, descending=True)[:, top : top + keep_n]
            out.scatter_(1, order, True)
        return keep
    n = d.numel()
    keep_n, top_n = int(density * n), int(gamma * n)
    bot = max(0, n - keep_n - top_n)
    keep.view(-1)[torch.sort(d.abs().reshape(-1)).indices[bot : bot + keep_n]] = True
    return keep


def crumbs(task: TensorTask, p) -> torch.Tensor:
    """Per expert, the breadcrumbs mask (`keep_mask`) and the rescale, over task.deltas."""
    gammas = expert_values(p.gamma, task.deltas.shape[0])

    def one(t, d, density):
        if density >= 1:
            return d
        keep = keep_mask(d, density, gammas[t], p.variant == "official")
        return gta.drop_(d, keep, p.rescale, 1.0)

    return gta.sparsify_each(task, p, one)


@register("breadcrumbs", BreadcrumbsParams, matrix_only=False)
def breadcrumbs(task: TensorTask, p: BreadcrumbsParams):
    """Model Breadcrumbs (Davari & Belilovsky, arXiv 2312.06795; mergekit `breadcrumbs`): mask each
    Δ_t's smallest entries and its largest outliers (per tensor), Δ* = λ Σ_t w_t M_t ⊙ Δ_t."""
    return gta.combine(task, crumbs(task, p), p, consensus=False)
