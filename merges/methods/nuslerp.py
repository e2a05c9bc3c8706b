import math

import torch
from pydantic import Field

from merges.registry import Params, PerExpert, TensorTask, expert_values, per_expert, register


class NuslerpParams(Params):
    weight: PerExpert() = per_expert(1.0, "w_t: t = w_2 / (w_1 + w_2)")
    flatten: bool = Field(True, description="one interpolation over the whole tensor")
    row_wise: bool = Field(
        False, description="without flatten: interpolate columns (dim 0) instead of rows"
    )


@register("nuslerp", NuslerpParams, matrix_only=False, n_experts=(2, 2))
def nuslerp(task: TensorTask, p: NuslerpParams):
    """NuSLERP (mergekit `nuslerp`, with a base): SLERP of the task vectors Δ_1, Δ_2 at
    t = w_2/(w_1 + w_2) (0.5 when |w_1 + w_2| < 1e-6): u_i = Δ_i/max(‖Δ_i‖, 1e-7), cos Ω = ⟨u_1, u_2⟩,
    Δ* = (sin((1 − t)Ω) Δ_1 + sin(tΩ) Δ_2)/sin Ω, linear where 1 − cos² Ω ≤ 1e-16. Norms are over
    the whole tensor (flatten), each row, or each column (row_wise)."""
    w = expert_values(p.weight, 2)
    t = 0.5 if abs(w[0] + w[1]) < 1e-6 else w[1] / (w[0] + w[1])
    shape = task.deltas.shape[1:]
    a, b = task.deltas[0], task.deltas[1]
    if p.flatten:  # one angle for the tensor: scalars, no unit-vector copies
        na = float(torch.linalg.vector_norm(a))
        nb = float(torch.linalg.vector_norm(b))
        cos = min(1.0, max(-1.0, float((a * b).sum()) / (max(na, 1e-7) * max(nb, 1e-7))))
        if 1 - cos * cos <= 1e-16:
            return a.mul_(1 - t).add_(b * t)
        omega = math.acos(cos)
        s = math.sin(omega)
        return a.mul_(math.sin((1 - t) * omega) / s).add_(b * (math.sin(t * omega) / s))
    if p.row_wise:
        a, b = a.transpose(0, -1), b.transpose(0, -1)
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=1e-7)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1, 1)
    linear = (1 - cos.square()) <= 1e-16
    omega = torch.acos(torch.where(linear, 0.0, cos))
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    out = torch.where(linear, (1 - t) * a + t * b, out)
    if p.row_wise and not p.flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)
