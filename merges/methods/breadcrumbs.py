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


def row_crumbs(d: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """In each row of n (a 1-D tensor is one row): keep magnitude ranks [⌊gamma·n⌋,
    ⌊gamma·n⌋ + ⌊density·n⌋) counted from the largest."""
    rows = d.reshape(1, -1) if d.dim() < 2 else d.reshape(-1, d.shape[-1])
    n = rows.shape[1]
    top, keep_n = int(gamma * n), int(density * n)
    order = torch.argsort(rows.abs(), dim=1, descending=True)[:, top : top + keep_n]
    keep = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, order, True)
    return torch.where(keep, rows, 0.0).view(d.shape)


def crumbs(task: TensorTask, p) -> torch.Tensor:
    """Per expert, the breadcrumbs mask (by row, or mergekit's over the tensor: sort |Δ_t|
    ascending, keep ranks [n_bot, n_bot + ⌊density·n⌋), n_bot = max(0, n − ⌊density·n⌋ − ⌊gamma·n⌋))."""
    gammas = expert_values(p.gamma, task.deltas.shape[0])

    def one(t, d, density):
        if density >= 1:
            return d.clone()
        if p.variant == "official":
            return gta.rescaled(d, row_crumbs(d, density, gammas[t]), p.rescale, 1.0)
        n = d.numel()
        keep_n, top_n = int(density * n), int(gammas[t] * n)
        bot = max(0, n - keep_n - top_n)
        keep = torch.zeros(n, dtype=torch.bool, device=d.device)
        keep[torch.sort(d.abs().reshape(-1)).indices[bot : bot + keep_n]] = True
        return gta.rescaled(d, torch.where(keep.view(d.shape), d, 0.0), p.rescale, 1.0)

    return gta.sparsify_each(task, p, one)


@register("breadcrumbs", BreadcrumbsParams, matrix_only=False)
def breadcrumbs(task: TensorTask, p: BreadcrumbsParams):
    """Model Breadcrumbs (Davari & Belilovsky, arXiv 2312.06795; mergekit `breadcrumbs`): mask each
    Δ_t's smallest entries and its largest outliers (per tensor), Δ* = λ Σ_t w_t M_t ⊙ Δ_t."""
    return gta.combine(task, crumbs(task, p), p, consensus=False)
