import torch
from pydantic import Field

from merges.methods.ram import ram_parts
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
    changed, count = ram_parts(d, p.epsilon)
    unique, shared = count == 1, count > 1
    rho = (changed & shared).sum(1) / (changed & unique).sum(1).clamp(min=p.epsilon)
    lam = 1 + p.r * rho.clamp(0, p.alpha)
    task.info["lambda"] = [round(float(x), 6) for x in lam]
    dz = d * changed
    merged = (dz * unique * lam[:, None]).sum(0) + (dz * shared / count.clamp(min=1)).sum(0)
    return merged.view(task.deltas.shape[1:]).to(torch.float32)
