import torch
from pydantic import Field

from merges.linalg import expand, factor_span, top_svd
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored


class CartParams(Params):
    rank_fraction: float = Field(
        0.12,
        gt=0,
        le=1,
        description="r: each centred delta keeps its top max(1, int(r·min(m, n))) triplets",
    )
    scale: float = Field(2.0, description="λ (the authors' `prior`; 2.0 with r 0.12 for 8 tasks)")


@register("cart", CartParams)
def cart(task: TensorTask, p: CartParams):
    """CART (Choi et al., arXiv 2412.12153; official code JH-GEECS/CART `src/merging.py`):
    Δ̄ = mean_t Δ_t, Δ* = Δ̄ + λ Σ_t SVD_k(Δ_t − Δ̄), k = max(1, int(r·min(m, n))): the average
    plus a low-rank sum of what each task adds to it (SVD in the factor dtype)."""
    mean = task.deltas.mean(0)
    m, n = mean.shape
    k = max(1, int(p.rank_fraction * min(m, n)))
    low_rank = torch.zeros_like(mean, dtype=task.factor_dtype)
    for d in task.deltas:
        u, s, v = top_svd((d - mean).to(task.factor_dtype), k)
        low_rank += (u * s) @ v.T
    task.info["rank"] = k
    return mean + p.scale * low_rank.to(torch.float32)


@register_factored("cart")
def cart_factored(task: FactoredTask, p: CartParams):
    """Δ* = L (K̄ + λ Σ_t SVD_k(K_t − K̄)) Pᵀ, Δ_t = L K_t Pᵀ (merges.linalg.factor_span).

    `cart` for low-rank experts: Δ_t − Δ̄ = L (K_t − K̄) Pᵀ has the singular values of its (Tr)²
    core, so the same k (from the full m, n) truncates both alike.
    """
    m, n = task.shape
    k = max(1, int(p.rank_fraction * min(m, n)))
    left, right, cores = factor_span(task.factors)
    ks = [b @ a for b, a in cores]
    mean = sum(ks) / len(ks)
    merged = mean.clone()
    for x in ks:
        u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        merged += p.scale * ((u[:, :k] * s[:k]) @ vh[:k])
    task.info["rank"] = k
    return expand(left, merged, right)
