import torch
from pydantic import Field

from merges.linalg import numerical_rank, polar
from merges.registry import Params, TensorTask, register


class TsvParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·U⊥ diag(ŝ) V⊥ᵀ")


@register("tsv", TsvParams)
def tsv(task: TensorTask, p: TsvParams):
    """TSV-Merge: top-k (k = ⌊r/T⌋) singular triplets per task, decorrelated by polar factors (Gargiulo et al. 2025).

    Each task keeps min(k, numerical rank) triplets, so arbitrary completion vectors of zero
    singular values never enter the polar step (spec §2.6 pitfall).
    """
    deltas = task.deltas.to(task.factor_dtype)
    t_count, m, n = deltas.shape
    k = min(m, n) // t_count
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        kt = min(k, numerical_rank(s, (m, n), torch.finfo(task.deltas.dtype).eps))
        us.append(u[:, :kt])
        ss.append(s[:kt])
        vs.append(vh[:kt].T)
    u_hat, s_hat, v_hat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    if s_hat.numel() == 0:
        return torch.zeros_like(task.deltas[0])
    merged = (polar(u_hat) * s_hat) @ polar(v_hat).T
    return (p.scale * merged).to(task.deltas.dtype)
