import torch
from pydantic import Field

from merges.linalg import expand, factor_span, numerical_rank, polar, product_svd, top_svd
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored


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


@register_factored("tsv")
def tsv_factored(task: FactoredTask, p: TsvParams):
    """Δ* = α·L polar(Û) diag(ŝ) polar(V̂)ᵀ Pᵀ, with Û, ŝ, V̂ the triplets of Δ_t = L (b_t a_t) Pᵀ.

    `tsv` for low-rank experts: each task's SVD from product_svd(b_t, a_t), the same k and rank cut
    (ε of the fp32 task vectors the dense path gets), polar factors of the (Tr)-row Û, V̂.
    """
    m, n = task.shape
    left, right, cores = factor_span(task.factors)
    k = min(m, n) // len(cores)
    eps = torch.finfo(torch.float32).eps
    us, ss, vs = [], [], []
    for b, a in cores:
        u, s, v = product_svd(b, a)
        kt = min(k, numerical_rank(s[:k], (m, n), eps))
        us.append(u[:, :kt])
        ss.append(s[:kt])
        vs.append(v[:, :kt])
    s_hat = torch.cat(ss)
    if s_hat.numel() == 0:
        return torch.zeros(m, n, device=left.device)
    merged = (_polar_svd(torch.cat(us, 1)) * s_hat) @ _polar_svd(torch.cat(vs, 1)).T
    return expand(left, p.scale * merged, right)


def _polar_svd(x: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh
