import time

import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class WudiParams(Params):
    iterations: int = Field(300, ge=0, description="Adam steps (the authors': 300)")
    lr: float = Field(1e-5, gt=0, description="Adam learning rate (the authors': 1e-5)")
    scale: float = Field(
        1.0, description="λ applied to the optimised task vector (the authors': 1)"
    )


@register("wudi", WudiParams)
def wudi(task: TensorTask, p: WudiParams):
    """WUDI-merging (Cheng et al., arXiv 2503.08099; official code nathanielyvo/WUDI-Merging
    `vit/wudi_main.py`): min_τ Σ_t ‖(τ − Δ_t) Δ_tᵀ‖²_F / ‖Δ_t‖²_F from τ = Σ_t Δ_t, by Adam
    (β = 0.9, 0.999, ε = 1e-8); Δ* = λτ. The gradient 2(τA − B), A = Σ_t Δ_tᵀΔ_t/‖Δ_t‖²,
    B = Σ_t Δ_t Δ_tᵀΔ_t/‖Δ_t‖², costs one [m, n]×[n, n] product per step."""
    t0 = time.perf_counter()
    d = task.deltas
    norms = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1).square()
    a = torch.zeros(d.shape[2], d.shape[2], dtype=d.dtype, device=d.device)
    b = torch.zeros_like(d[0])
    const = 0.0  # Σ_t tr(Δ_t G_t Δ_tᵀ)
    for x, sq in zip(d, norms, strict=True):
        if sq > 0:
            g = (x.T @ x) / sq
            a += g
            xg = x @ g
            b += xg
            const += float((xg * x).sum())
    tau = torch.nn.Parameter(d.sum(0))
    opt = torch.optim.Adam([tau], lr=p.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)

    def objective() -> float:
        """Σ_t tr((τ − Δ_t) G_t (τ − Δ_t)ᵀ) = tr(τAτᵀ) − 2 tr(τBᵀ) + Σ_t tr(Δ_t G_t Δ_tᵀ)."""
        with torch.no_grad():
            return float(((tau @ a) * tau).sum() - 2 * (tau * b).sum()) + const

    start = objective()
    for _ in range(p.iterations):
        with torch.no_grad():
            tau.grad = 2 * (tau @ a - b)
        opt.step()
    task.info.update(
        iterations=p.iterations,
        objective_start=start,
        objective_end=objective(),
        seconds=round(time.perf_counter() - t0, 4),
    )
    return p.scale * tau.detach()
