import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class RamPlusParams(Params):
    r: float = Field(0.1, description="strength of the boost of an expert's unique changes")
    alpha: float = Field(0.2, ge=0, description="cap on the shared/unique ratio ρ_t")
    epsilon: float = Field(1e-5, ge=0, description="|Δ_t| above this counts as a change")


@register("ramplus_tl", RamPlusParams, matrix_only=False)
def ramplus_tl(task: TensorTask, p: RamPlusParams):
    """RAM+ tensor-local (arXiv 2601.13572; mergekit `ramplus_tl`): per expert and tensor,
    ρ_t = #(changed by t and others) / max(#(changed by t only), ε), λ_t = 1 + r·clip(ρ_t, 0, α);
    Δ* = Σ_t λ_t Δ_t on entries only t changed, plus the mean of the changes elsewhere."""
    d = task.deltas.reshape(task.deltas.shape[0], -1)
    count = torch.zeros(d.shape[1], dtype=torch.int16, device=d.device)
    for x in d:
        count += x.abs() > p.epsilon
    unique, shared = count == 1, count > 1
    lam = []
    for x in d:
        changed = x.abs() > p.epsilon
        rho = int((changed & shared).sum()) / max(int((changed & unique).sum()), p.epsilon)
        lam.append(1 + p.r * min(max(rho, 0.0), p.alpha))
    task.info["lambda"] = [round(x, 6) for x in lam]
    merged = torch.zeros_like(d[0])
    divisor = count.clamp(min=1).float()
    for x, lt in zip(d, lam, strict=True):
        changed = x.abs() > p.epsilon
        merged.add_(torch.where(changed & unique, x * lt, (x / divisor) * (changed & shared)))
    return merged.view(task.deltas.shape[1:])
