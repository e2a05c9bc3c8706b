import math

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
    w = expert_values(p.weight, n)
    if p.normalize_weights:
        w = [x / sum(w) for x in w]
    norms = [float(torch.linalg.vector_norm(x)) for x in d]
    for x, nt in zip(d, norms, strict=True):  # in place: the unit vectors u_t
        x.div_(nt + p.eps)
    mean = torch.zeros_like(d[0])
    for x, wt in zip(d, w, strict=True):
        mean.add_(x * wt)
    mean_norm = float(torch.linalg.vector_norm(mean))
    if mean_norm < p.eps:
        if n == 2:  # mergekit's linear fallback, on the task vectors
            out = sum(x * (nt + p.eps) * wt for x, nt, wt in zip(d, norms, w, strict=True))
            return out.view(task.deltas.shape[1:])
        raise MergeInputError(
            f"multislerp: the weighted unit task vectors of tensor {task.name} cancel out; "
            "give other weights"
        )
    mean.div_(mean_norm)
    tangent = torch.zeros_like(mean)
    for x, wt in zip(d, w, strict=True):
        tangent.add_((x - float((x * mean).sum()) * mean) * wt)
    tn = float(torch.linalg.vector_norm(tangent)) + p.eps
    out = mean.mul_(math.cos(tn)).add_(tangent.mul_(math.sin(tn) / tn))
    return out.mul_(sum(nt * wt for nt, wt in zip(norms, w, strict=True))).view(
        task.deltas.shape[1:]
    )
