import math
from typing import Literal

import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


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


def heterogeneity(deltas: torch.Tensor) -> tuple[float, bool, torch.Tensor]:
    """γ = Var_unbiased(ℓ)/(mean(ℓ)² + 1e-12) with ℓ_t = log(‖Δ_t‖²_F + 1e-12); flag = γ > 0.3."""
    tau = deltas.pow(2).sum(dim=(1, 2))
    if deltas.shape[0] < 2:
        return 0.0, False, tau
    ell = torch.log(tau + 1e-12)
    gamma = float(ell.var(unbiased=True) / (ell.mean() ** 2 + 1e-12))
    return gamma, gamma > 0.3, tau


@register("ace", AceParams)
def ace(task: TensorTask, p: AceParams):
    """ACE-Merging: centred covariances, ridge, broadcast prior, spectral refinement (official code, arXiv 2603.02945)."""
    d = task.deltas.to(task.factor_dtype)
    t_count, m, n = d.shape
    gamma, flag, tau = heterogeneity(d)
    eye = torch.eye(n, dtype=d.dtype, device=d.device)
    centred = d - d.mean(dim=1, keepdim=True)  # rows as samples: subtract the mean row
    sig_hat, eps_t, traces = [], [], []
    for x in centred:
        raw = x.T @ x
        c = torch.trace(raw) + 1e-12
        traces.append(float(torch.trace(raw)))
        s = raw / c if flag else raw
        e = p.eps / c if flag else torch.tensor(p.eps, dtype=d.dtype, device=d.device)
        if p.eps_mode == "relative":
            e = p.eps * torch.trace(s) / n
        sig_hat.append(s)
        eps_t.append(e)
    sum_sig = sum(sig_hat)
    c_agg = sum_sig.mean(dim=0, keepdim=True)
    if flag:
        c_agg = c_agg / (tau.mean() + 1e-12)
    a = (
        sum(s + e * eye for s, e in zip(sig_hat, eps_t, strict=True)) + c_agg
    )  # broadcast to every row
    b = sum(x @ (s + e * eye) for x, s, e in zip(centred, sig_hat, eps_t, strict=True))
    try:
        core = torch.linalg.solve(a.T, b.T).T  # B A⁻¹
    except RuntimeError:  # torch.linalg.LinAlgError: singular A, as the official pinv fallback
        core = b @ torch.linalg.pinv(a)
    merged = core
    if flag:
        sig_bar = sum(s + e * eye for s, e in zip(sig_hat, eps_t, strict=True)) / t_count
        resid = sum(x @ (s - sig_bar) for x, s in zip(d, sig_hat, strict=True))
        u, s, vh = torch.linalg.svd(resid + core, full_matrices=False)
        k = max(1, math.floor(p.k_frac * min(m, n)))
        merged = core + s[:k].mean() * (u[:, :k] @ vh[:k])
    task.info.update(gamma=gamma, flag=flag, mean_eig=[tr / n for tr in traces])
    return (p.scale * merged).to(task.deltas.dtype)
