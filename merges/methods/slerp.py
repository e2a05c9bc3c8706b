import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class SlerpParams(Params):
    t: float = Field(0.5, description="0 gives the base, 1 the expert")
    dot_threshold: float = Field(
        0.9995, gt=0, le=1, description="|cos Ω| above this interpolates linearly"
    )


def slerp_coefficients(cos: torch.Tensor, t: float, linear: torch.Tensor):
    """(a, b) with slerp = a·u + b·v: sin((1 − t)Ω)/sin Ω and sin(tΩ)/sin Ω, Ω = arccos(cos);
    (1 − t, t) where `linear`."""
    omega = torch.acos(torch.where(linear, 0.0, cos))
    s = torch.sin(omega)
    a = torch.where(linear, 1 - t, torch.sin((1 - t) * omega) / torch.where(linear, 1.0, s))
    b = torch.where(linear, t, torch.sin(t * omega) / torch.where(linear, 1.0, s))
    return a, b


@register("slerp", SlerpParams, matrix_only=False, needs_base=True, n_experts=(1, 1))
def slerp(task: TensorTask, p: SlerpParams):
    """SLERP (Shoemake 1985; mergekit `slerp`) of the whole tensors W_0 and W_1:
    cos Ω = ⟨W_0/‖W_0‖, W_1/‖W_1‖⟩ (norms below 1e-8 count as 1), W* = sin((1 − t)Ω)/sin Ω · W_0
    + sin(tΩ)/sin Ω · W_1, linear where |cos Ω| > dot_threshold; Δ* = W* − W_0."""
    w0 = task.base.reshape(-1)
    w1 = task.deltas[0].reshape(-1).add_(w0)  # in place: W_1
    n0, n1 = torch.linalg.vector_norm(w0), torch.linalg.vector_norm(w1)
    n0, n1 = torch.where(n0 > 1e-8, n0, 1.0), torch.where(n1 > 1e-8, n1, 1.0)
    cos = (torch.dot(w0, w1) / (n0 * n1)).clamp(-1, 1)
    linear = cos.abs() > p.dot_threshold
    a, b = slerp_coefficients(cos, p.t, linear)
    task.info["cos"] = round(float(cos), 8)
    return w1.mul_(b).add_(w0 * (a - 1)).view(task.base.shape)
