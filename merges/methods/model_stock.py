import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class ModelStockParams(Params):
    filter_wise: bool = Field(
        False, description="one t per row (output filter) instead of per tensor"
    )


@register("model_stock", ModelStockParams, matrix_only=False, n_experts=(2, None))
def model_stock(task: TensorTask, p: ModelStockParams):
    """Model Stock (Jang et al., arXiv 2403.19522; mergekit `model_stock`): cos θ = the mean over
    expert pairs of cos(Δ_i, Δ_j) (per tensor, or per row with filter_wise), N experts,
    t = N cos θ / (1 + (N − 1) cos θ) (0 where the denominator is below 1e-6); Δ* = t · mean_t Δ_t."""
    n = task.deltas.shape[0]
    d = task.deltas
    if p.filter_wise:
        d = d.unsqueeze(1) if d.dim() == 2 else d
    else:
        d = d.reshape(n, -1)
    norms = torch.linalg.vector_norm(d, dim=-1)
    cos = [
        ((d[i] * d[j]).sum(-1) / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)
        for i in range(n)
        for j in range(i + 1, n)
    ]
    c = torch.stack(cos).mean(0).unsqueeze(-1)
    den = 1 + (n - 1) * c
    t = torch.where(den.abs() < 1e-6, 0.0, n * c / torch.where(den.abs() < 1e-6, 1.0, den))
    task.info["t_mean"] = round(float(t.mean()), 6)
    return (t * d.mean(0)).reshape(task.deltas.shape[1:])
