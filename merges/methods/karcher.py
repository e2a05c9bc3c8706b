import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class KarcherParams(Params):
    max_iter: int = Field(10, ge=1, description="Riemannian gradient steps at most")
    tol: float = Field(1e-5, gt=0, description="stop when the tangent's norm is below this")


@register("karcher", KarcherParams, matrix_only=False, needs_base=True)
def karcher(task: TensorTask, p: KarcherParams):
    """Karcher mean (arXiv 2603.04972; mergekit `karcher`) of the experts' whole tensors W_t on the
    unit sphere, equal weights α = 1/T: u_t = W_t/‖W_t‖ (those with ‖W_t‖ ≤ tol left out of the
    mean), m_0 = normalised mean of the u_t; m ← exp_m(Σ α_t θ_t/sin θ_t (u_t − cos θ_t m)),
    θ_t = arccos⟨m, u_t⟩, until the step's norm < tol; W* = (Σ_t α_t ‖W_t‖) m; Δ* = W* − W_0."""
    n = task.deltas.shape[0]
    if n == 1:
        return task.deltas[0]
    w = task.deltas.reshape(n, -1)
    for x in w:  # in place: W_t, then (below) W_t/‖W_t‖
        x.add_(task.base.reshape(-1))
    norms = torch.linalg.vector_norm(w, dim=-1)
    valid = [i for i in range(n) if float(norms[i]) > p.tol]
    if not valid:
        return -task.base
    units = [w[i].div_(norms[i]) for i in valid]
    alpha = 1.0 / len(valid)
    mean = sum(alpha * u for u in units)
    mn = torch.linalg.vector_norm(mean)
    mean = units[0].clone() if float(mn) < p.tol else mean / mn
    steps = 0
    for _ in range(p.max_iter):
        tangent = torch.zeros_like(mean)
        for u in units:
            cos = torch.clamp(torch.dot(mean, u), -1.0, 1.0)
            theta = torch.arccos(cos)
            if float(theta) < p.tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (u - cos * mean)
        tn = torch.linalg.vector_norm(tangent)
        if float(tn) < p.tol:
            break
        steps += 1
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        un = torch.linalg.vector_norm(mean)
        if float(un) > p.tol:
            mean = mean / un
    task.info["iterations"] = steps
    scale = sum(norms[i] for i in range(n)) / n
    return (scale * mean).view(task.base.shape) - task.base
