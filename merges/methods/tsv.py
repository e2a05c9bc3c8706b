import torch
from pydantic import Field

from merges.linalg import polar, top_svd
from merges.registry import Params, TensorTask, register


class TsvParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·U⊥ diag(ŝ) V⊥ᵀ")


@register("tsv", TsvParams)
def tsv(task: TensorTask, p: TsvParams):
    """TSV-Merge: top-k (k = ⌊r/T⌋) singular triplets per task, decorrelated by polar factors (Gargiulo et al. 2025).

    Each task keeps min(k, numerical rank) triplets, so arbitrary completion vectors of zero
    singular values never enter the polar step (spec §2.6 pitfall). Triplets and polar factors
    in factor_dtype (via Gram eigh where accurate, see merges.linalg); the result in fp32.
    """
    t_count, m, n = task.deltas.shape
    k = min(m, n) // t_count
    eps = torch.finfo(task.deltas.dtype).eps
    parts = [top_svd(d.to(task.factor_dtype), k, rank_eps=eps) for d in task.deltas]
    us, ss, vs = zip(*parts, strict=True)
    u_hat, s_hat, v_hat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    if s_hat.numel() == 0:
        return torch.zeros_like(task.deltas[0])
    merged = (polar(u_hat) * s_hat) @ polar(v_hat).T
    return (p.scale * merged).to(task.deltas.dtype)
