import torch
from pydantic import Field

from merges.linalg import polar
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
    """Iso-CTS: common subspace of Σ_t Δ_t plus each task's top directions outside it, isotropic spectrum (Marczak et al. 2025)."""
    deltas = task.deltas.to(task.factor_dtype)
    t_count, m, n = deltas.shape
    r = min(m, n)
    k_c, n_t = subspace_sizes(r, t_count, p.common_fraction)
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    u_c, s_c, v_c = u[:, :k_c], s[:k_c], vh[:k_c].T
    us, ss, vs = [], [], []
    for d in deltas:
        resid = d - u_c @ (u_c.T @ d)
        ut, st, vht = torch.linalg.svd(resid, full_matrices=False)
        us.append(ut[:, :n_t])
        ss.append(st[:n_t])
        vs.append(vht[:n_t].T)
    u_hat = torch.cat([*us, u_c], 1)
    v_hat = torch.cat([*vs, v_c], 1)
    s_bar = torch.cat([*ss, s_c]).mean()
    task.info.update(k_common=k_c, k_per_task=n_t)
    return (p.scale * s_bar * (polar(u_hat) @ polar(v_hat).T)).to(task.deltas.dtype)
