import torch
from pydantic import Field

from merges.errors import MergeInputError
from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert, register


class MultislerpParams(Params):
    weight: PerExpert() = per_expert(1.0, "w_t: the expert's weight")
    normalize_weights: bool = Field(True, description="divide the weights by their sum")
    eps: float = Field(1e-8, gt=0, description="guard added to norms")


@register("multislerp", MultislerpParams, matrix_only=False)
def multislerp(task: TensorTask, p: MultislerpParams):
    """Multi-SLERP (goddard.blog; mergekit `multislerp`, with a base): u_t = Δ_t/(‖Δ_t‖ + ε),
    m = Σ w_t u_t / ‖Σ w_t u_t‖, tangents v_t = u_t − ⟨u_t, m⟩ m, v = Σ w_t v_t,
    Δ* = (cos‖v‖' m + sin‖v‖' v/‖v‖') · Σ w_t ‖Δ_t‖ with ‖v‖' = ‖v‖ + ε (w normalised to sum 1)."""
    n = task.deltas.shape[0]
    if n == 1:
        return task.deltas[0]
    d = task.deltas.reshape(n, -1)
    w = torch.tensor(expert_values(p.weight, n), dtype=d.dtype, device=d.device)
    if p.normalize_weights:
        w = w / w.sum()
    norms = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    u = d / (norms + p.eps)
    mean = (u * w[:, None]).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < p.eps:
        if n == 2:
            return (d[0] * w[0] + d[1] * w[1]).view(task.deltas.shape[1:])
        raise MergeInputError(
            f"multislerp: the weighted unit task vectors of tensor {task.name} cancel out; "
            "give other weights"
        )
    mean = mean / mean_norm
    tangent = ((u - (u * mean).sum(-1, keepdim=True) * mean) * w[:, None]).sum(0)
    tn = torch.linalg.vector_norm(tangent) + p.eps
    out = mean * torch.cos(tn) + tangent * (torch.sin(tn) / tn)
    return (out * (norms.squeeze(-1) * w).sum()).view(task.deltas.shape[1:])
