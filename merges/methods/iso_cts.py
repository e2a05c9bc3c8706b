import torch
from pydantic import Field

from merges.linalg import polar, top_svd
from merges.registry import Params, TensorTask, register


class IsoCtsParams(Params):
    scale: float = Field(1.0, description="α in Δ* = α·s̄·U⊥ V⊥ᵀ")
    common_fraction: float = Field(
        0.8, gt=0, le=1, description="f: share of the r directions taken from Σ_t Δ_t"
    )


def subspace_sizes(r: int, t_count: int, f: float) -> tuple[int, int]:
    """(k_c, n_t) as in the official iso.py: k_ts = round((r − int(r·f))/T)·T, k_c = r − k_ts."""
    k_ts = round((r - int(r * f)) / t_count) * t_count
    return r - k_ts, k_ts // t_count


@register("iso_cts", IsoCtsParams)
def iso_cts(task: TensorTask, p: IsoCtsParams):
    """Iso-CTS: common subspace of Σ_t Δ_t plus each task's top directions outside it, isotropic spectrum (Marczak et al. 2025).

    Top k_c triplets of Σ_t Δ_t, top n_t of each (I − U_c U_cᵀ)Δ_t, Δ* = α·s̄·polar(Û) polar(V̂)ᵀ;
    factorisations in factor_dtype (via Gram eigh where accurate, see merges.linalg), result fp32.
    """
    fd = task.factor_dtype
    t_count, m, n = task.deltas.shape
    k_c, n_t = subspace_sizes(min(m, n), t_count, p.common_fraction)
    u_c, s_c, v_c = top_svd(task.deltas.sum(0, dtype=fd), k_c)
    us, ss, vs = [], [], []
    for d in task.deltas:
        d = d.to(fd)
        ut, st, vt = top_svd(d - u_c @ (u_c.T @ d), n_t)
        us.append(ut)
        ss.append(st)
        vs.append(vt)
    u_hat = torch.cat([*us, u_c], 1)
    v_hat = torch.cat([*vs, v_c], 1)
    s_bar = torch.cat([*ss, s_c]).mean()
    task.info.update(k_common=k_c, k_per_task=n_t)
    return (p.scale * s_bar * (polar(u_hat) @ polar(v_hat).T)).to(task.deltas.dtype)
