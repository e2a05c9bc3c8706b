import math
from typing import Literal

import torch
from pydantic import Field

from merges.linalg import expand, factor_span, numerical_rank, top_svd, xtx, xxt
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored


class AceParams(Params):
    eps: float = Field(1e-2, ge=0, description="ridge ε added to each task covariance")
    k_frac: float = Field(
        0.3,
        gt=0,
        le=1,
        description="fraction of the r directions boosted by the spectral refinement",
    )
    eps_mode: Literal["absolute", "relative"] = Field(
        "absolute",
        description="absolute: the official code's ε; relative: ε_t = ε·tr(Σ̂_t)/n "
        "(a labelled deviation that makes ε scale-free)",
    )
    scale: float = Field(1.0, description="λ in W = W_0 + λ·Δ*")


def heterogeneity(tau: torch.Tensor) -> tuple[float, bool]:
    """γ = Var_unbiased(ℓ)/(mean(ℓ)² + 1e-12) with ℓ_t = log(τ_t + 1e-12), τ_t = ‖Δ_t‖²_F; flag = γ > 0.3."""
    if tau.shape[0] < 2:
        return 0.0, False
    ell = torch.log(tau + 1e-12)
    gamma = float(ell.var(unbiased=True) / (ell.mean() ** 2 + 1e-12))
    return gamma, gamma > 0.3


@register("ace", AceParams)
def ace(task: TensorTask, p: AceParams):
    """ACE-Merging: centred covariances, ridge, broadcast prior, spectral refinement (official code, arXiv 2603.02945).

    With X_t = Δ_t − 1μ_tᵀ (μ_t the mean row), Σ̂_t = X_tᵀX_t (/c_t if flagged), ε_t the ridge:
    A = Σ_t (Σ̂_t + ε_t I) + 1·mean_rows(Σ_t Σ̂_t) (/mean τ if flagged), B = Σ_t X_t(Σ̂_t + ε_t I),
    core = B A⁻¹ (LU solve). Flagged: Δ* = core + mean(s_1..k)·U_k V_kᵀ, the top-k SVD of
    Σ_t Δ_t(Σ̂_t − Σ̄) + core with Σ_t Δ_t Σ̂_t = Σ_t (X_t Σ̂_t + 1·μ_tᵀΣ̂_t). All in factor_dtype.
    """
    fd = task.factor_dtype
    t_count, m, n = task.deltas.shape
    xs = [x.to(fd, copy=True) for x in task.deltas]
    tau = torch.stack([x.pow(2).sum() for x in xs])
    gamma, flag = heterogeneity(tau)
    d_sum = sum(xs) if flag else None
    sum_sig, sum_eps, xsig, eps_x, mu_sig, traces = None, 0.0, None, None, None, []
    for x in xs:
        mu = x.mean(dim=0, keepdim=True)
        x.sub_(mu)  # rows as samples: subtract the mean row
        raw = xtx(x)
        tr = torch.trace(raw)
        c = tr + 1e-12
        traces.append(float(tr))
        sig = raw.div_(c) if flag else raw
        e = p.eps / c if flag else torch.tensor(p.eps, dtype=fd, device=x.device)
        if p.eps_mode == "relative":
            e = p.eps * torch.trace(sig) / n
        if m >= n:
            xs_t = x @ sig
        else:  # X Σ̂ as (X Xᵀ) X: fewer FLOPs when m < n
            xs_t = xxt(x) @ x
            if flag:
                xs_t.div_(c)
        xsig = xs_t if xsig is None else xsig.add_(xs_t)
        eps_x = e * x if eps_x is None else eps_x.add_(e * x)
        if flag:
            ms = mu @ sig
            mu_sig = ms if mu_sig is None else mu_sig.add_(ms)
        sum_sig = sig if sum_sig is None else sum_sig.add_(sig)
        sum_eps = sum_eps + e
        del raw, sig, xs_t
    del xs
    c_agg = sum_sig.mean(dim=0, keepdim=True)
    if flag:
        c_agg = c_agg / (tau.mean() + 1e-12)
    a = sum_sig.clone()
    a.diagonal().add_(sum_eps)
    a_reg = a.clone() if flag else None
    a.add_(c_agg)  # broadcast to every row
    b = xsig + eps_x
    del eps_x
    try:
        core = torch.linalg.solve(a.T, b.T).T  # B A⁻¹
    except RuntimeError:  # torch.linalg.LinAlgError: singular A, as the official pinv fallback
        core = b @ torch.linalg.pinv(a)
    del a, b
    merged = core
    if flag:
        sig_bar = a_reg.div_(t_count)  # Σ̄ = Σ_t (Σ̂_t + ε_t I) / T
        resid = xsig.add_(mu_sig) - d_sum @ sig_bar
        k = max(1, math.floor(p.k_frac * min(m, n)))
        u, s, v = top_svd(resid.add_(core), k)
        merged = core + s.mean() * (u @ v.T)
    task.info.update(gamma=gamma, flag=flag, mean_eig=[tr / n for tr in traces])
    return (p.scale * merged).to(task.deltas.dtype)


@register_factored("ace")
def ace_factored(task: FactoredTask, p: AceParams):
    """Δ* = L (B̃ Ã⁻¹ [+ refinement]) Pᵀ: `ace` with Δ_t = L K_t Pᵀ, L, P spanning the factors and 1.

    Centring keeps X_t = L (K_t − 1̃μ̃_t) Pᵀ in the span (1 = L 1̃ = P 1̂), so Σ̂_t, B and the prior
    live in P's coordinates and A = ε_Σ(I − PPᵀ) + P Ã Pᵀ gives B A⁻¹ = L B̃ Ã⁻¹ Pᵀ. None where
    the dense result is not determined by the span: total ridge ε_Σ = Σ_t ε_t at or below the
    rounding floor of A (singular A), or a flagged refinement whose top k exceeds the rank of F.
    """
    fd = torch.float64
    m, n = task.shape
    t_count = len(task.factors)
    left, right, cores = factor_span(task.factors, ones=True)
    ones_l = left.sum(0)  # Lᵀ1_m
    ones_r = right.sum(0)  # Pᵀ1_n
    ks = [b @ a for b, a in cores]
    tau = torch.stack([k.pow(2).sum() for k in ks])
    gamma, flag = heterogeneity(tau)
    sum_sig, sum_eps, xsig, eps_x, mu_sig, traces = 0, 0.0, 0, 0, 0, []
    for k in ks:
        mu = (ones_l @ k / m)[None]  # the mean row μ_tᵀ, in P's coordinates
        x = k - ones_l[:, None] @ mu
        raw = x.T @ x
        tr = torch.trace(raw)
        c = tr + 1e-12
        traces.append(float(tr))
        sig = raw / c if flag else raw
        e = p.eps / c if flag else torch.tensor(p.eps, dtype=fd, device=x.device)
        if p.eps_mode == "relative":
            e = p.eps * torch.trace(sig) / n
        xsig = xsig + x @ sig
        eps_x = eps_x + e * x
        if flag:
            mu_sig = mu_sig + mu @ sig
        sum_sig = sum_sig + sig
        sum_eps = sum_eps + e
    c_agg = (ones_r @ sum_sig / n)[None]
    if flag:
        c_agg = c_agg / (tau.mean() + 1e-12)
    a_reg = sum_sig + sum_eps * torch.eye(len(ones_r), dtype=fd, device=left.device)
    a = a_reg + ones_r[:, None] @ c_agg
    if not sum_eps > n * torch.finfo(fd).eps * torch.linalg.matrix_norm(a):
        return None
    core = torch.linalg.solve(a.T, (xsig + eps_x).T).T
    merged = core
    if flag:
        resid = xsig + ones_l[:, None] @ mu_sig - sum(ks) @ (a_reg / t_count)
        u, s, vh = torch.linalg.svd(resid + core, full_matrices=False)
        k = max(1, math.floor(p.k_frac * min(m, n)))
        if k > numerical_rank(s, (m, n), torch.finfo(torch.float32).eps):
            return None
        merged = core + s[:k].mean() * (u[:, :k] @ vh[:k])
    task.info.update(gamma=gamma, flag=flag, mean_eig=[tr / n for tr in traces])
    return expand(left, p.scale * merged, right)
