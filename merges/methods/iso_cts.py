from typing import Literal

import torch
from pydantic import Field

from merges.linalg import expand, factor_span, numerical_rank, polar, top_svd, xtx, xxt
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored

RANK_EPS = torch.finfo(torch.float32).eps
"""ε of the rank cuts: that of the fp32 task vectors the engine hands to the dense path (as TSV)."""


class IsoCtsParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·s̄·U⊥ V⊥ᵀ")
    common_fraction: float = Field(
        0.8, gt=0, le=1, description="f: share of the r directions taken from Σ_t Δ_t"
    )
    rank: Literal["full", "numerical"] = Field(
        "full",
        description="full: r = min(m, n) directions (the paper's); numerical: only the "
        "numerically nonzero singular directions (rank cut like TSV's numerical_rank with fp32 "
        "eps): r = min(rank [Δ_1 … Δ_T], rank [Δ_1; …; Δ_T]), every SVD cut at its numerical "
        "rank, the mean over the kept; exact and factored for LoRA experts; a deviation from the "
        "paper, which averages over all min(m, n)",
    )


def subspace_sizes(r: int, t_count: int, f: float) -> tuple[int, int]:
    """(k_c, n_t) as in the official iso.py: k_ts = round((r − int(r·f))/T)·T, k_c = r − k_ts."""
    k_ts = round((r - int(r * f)) / t_count) * t_count
    return r - k_ts, k_ts // t_count


@register("iso_cts", IsoCtsParams)
def iso_cts(task: TensorTask, p: IsoCtsParams):
    """Iso-CTS: common subspace of Σ_t Δ_t plus each task's top directions outside it, isotropic spectrum (Marczak et al. 2025).

    Top k_c triplets of Σ_t Δ_t, top n_t of each (I − U_c U_cᵀ)Δ_t, Δ* = α·s̄·polar(Û) polar(V̂)ᵀ;
    factorisations in factor_dtype (via Gram eigh where accurate, see merges.linalg), result fp32.

    rank = numerical (a deviation from the paper, spec §2.8 pitfall), so that no direction of a
    zero singular value enters polar(Û), polar(V̂) or the mean: r = min(rank [Δ_1 … Δ_T],
    rank [Δ_1; …; Δ_T]) (the dimensions of the sum of the tasks' column spaces and of their row
    spaces, each rank from the singular values of its fp64 Gram Σ_t Δ_tΔ_tᵀ or Σ_t Δ_tᵀΔ_t, cut
    at max(m, n)·ε_fp32·s_1 as merges.linalg.numerical_rank), the largest r for which Û and V̂
    can have r independent columns; (k_c, n_t) = subspace_sizes(r, T, f); every SVD (of Σ_t Δ_t
    and of each projected Δ_t) keeps only its singular values s > max(m, n)·ε_fp32·max(s_1, σ),
    σ = s_1 of [Δ_1 … Δ_T] (so a task that lies inside U_c leaves only rounding noise, which is
    cut); s̄ = the mean over the kept. On full-rank experts r = min(m, n) and nothing is cut:
    the paper's Iso-CTS. Records `rank` = r.
    """
    fd = task.factor_dtype
    t_count, m, n = task.deltas.shape
    numerical = p.rank == "numerical"
    sigma = 0.0
    if numerical:
        r, sigma = _stacked_rank(task.deltas)
    else:
        r = min(m, n)
    k_c, n_t = subspace_sizes(r, t_count, p.common_fraction)
    u_c, s_c, v_c = _top(task.deltas.sum(0, dtype=fd), k_c, numerical, sigma)
    us, ss, vs = [], [], []
    for d in task.deltas:
        d = d.to(fd)
        ut, st, vt = _top(d - u_c @ (u_c.T @ d), n_t, numerical, sigma)
        us.append(ut)
        ss.append(st)
        vs.append(vt)
    u_hat = torch.cat([*us, u_c], 1)
    v_hat = torch.cat([*vs, v_c], 1)
    s_hat = torch.cat([*ss, s_c])
    task.info.update(k_common=k_c, k_per_task=n_t)
    if numerical:
        task.info["rank"] = r
        if s_hat.numel() == 0:
            return torch.zeros_like(task.deltas[0])
    s_bar = s_hat.mean()
    return (p.scale * s_bar * (polar(u_hat) @ polar(v_hat).T)).to(task.deltas.dtype)


def _top(x: torch.Tensor, k: int, numerical: bool, sigma: float):
    """Top k triplets of x; numerical: only those with s > max(m, n)·ε_fp32·max(s_1, sigma)."""
    if not numerical:
        return top_svd(x, k)
    u, s, v = top_svd(x, k, rank_eps=RANK_EPS)
    kt = int((s > max(x.shape) * RANK_EPS * sigma).sum())
    return u[:, :kt], s[:kt], v[:, :kt]


def _stacked_rank(deltas: torch.Tensor) -> tuple[int, float]:
    """(min(rank [Δ_1 … Δ_T], rank [Δ_1; …; Δ_T]), s_1 of [Δ_1 … Δ_T]) from the fp64 Grams
    Σ_t Δ_tΔ_tᵀ [m, m] and Σ_t Δ_tᵀΔ_t [n, n] (their σ² floor ≈ ε_fp64·s_1² is far below the cut)."""
    shape = tuple(deltas.shape[1:])
    left = right = None
    for d in deltas:
        d = d.to(torch.float64)
        g = xxt(d)
        left = g if left is None else left.add_(g)
        g = xtx(d)
        right = g if right is None else right.add_(g)
        del g
    s_left = torch.linalg.eigvalsh(left).flip(0).clamp_min(0).sqrt()
    del left
    s_right = torch.linalg.eigvalsh(right).flip(0).clamp_min(0).sqrt()
    r = min(numerical_rank(s_left, shape, RANK_EPS), numerical_rank(s_right, shape, RANK_EPS))
    return r, float(s_left[0]) if s_left.numel() else 0.0


@register_factored("iso_cts")
def iso_cts_factored(task: FactoredTask, p: IsoCtsParams):
    """Δ* = α·s̄·L polar(û) polar(v̂)ᵀ Pᵀ: `iso_cts` (rank = numerical) in the span of the factors.

    Δ_t = L K_t Pᵀ (merges.linalg.factor_span, K_t = b_t a_t): [Δ_1 … Δ_T] and [Δ_1; …; Δ_T] have
    the singular values of [K_1 … K_T] and [K_1; …; K_T], so r and σ are the same; the common
    triplets are those of Σ_t K_t, the projection (I − U_cU_cᵀ)Δ_t = L (K_t − u_c u_cᵀ K_t) Pᵀ for
    U_c = L u_c, each SVD cut alike; Û = L û, V̂ = P v̂ give polar(Û) = L polar(û). None for
    rank = full, whose completion vectors of zero singular values lie outside the span.
    """
    if p.rank != "numerical":
        return None
    m, n = task.shape
    t_count = len(task.factors)
    left, right, cores = factor_span(task.factors)
    ks = [b @ a for b, a in cores]
    s_left = torch.linalg.svdvals(torch.cat(ks, 1))
    s_right = torch.linalg.svdvals(torch.cat(ks, 0))
    r = min(numerical_rank(s_left, (m, n), RANK_EPS), numerical_rank(s_right, (m, n), RANK_EPS))
    sigma = float(s_left[0]) if s_left.numel() else 0.0
    k_c, n_t = subspace_sizes(r, t_count, p.common_fraction)
    u_c, s_c, v_c = _top_small(sum(ks), k_c, (m, n), sigma)
    us, ss, vs = [], [], []
    for k in ks:
        ut, st, vt = _top_small(k - u_c @ (u_c.T @ k), n_t, (m, n), sigma)
        us.append(ut)
        ss.append(st)
        vs.append(vt)
    s_hat = torch.cat([*ss, s_c])
    task.info.update(k_common=k_c, k_per_task=n_t, rank=r)
    if s_hat.numel() == 0:
        return torch.zeros(m, n, device=left.device)
    u_hat = torch.cat([*us, u_c], 1)
    v_hat = torch.cat([*vs, v_c], 1)
    core = p.scale * s_hat.mean() * (polar(u_hat) @ polar(v_hat).T)
    return expand(left, core, right)


def _top_small(x: torch.Tensor, k: int, shape: tuple[int, int], sigma: float):
    """`_top` (numerical) of a core x = Lᵀ X P, the cut with the full tensor's shape."""
    if k < 0:
        raise ValueError(f"top_svd: k = {k} < 0")
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    tol = max(shape) * RANK_EPS * max(float(s[0]) if s.numel() else 0.0, sigma)
    kt = min(k, int((s > tol).sum()))
    return u[:, :kt], s[:kt], vh[:kt].T
