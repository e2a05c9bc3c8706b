import zlib
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from merges.methods.dare import dare_mask
from merges.methods.iso_c import IsoCParams, iso_c
from merges.methods.task_arithmetic import TaskArithmeticParams, task_arithmetic
from merges.methods.ties import TiesParams, ties, trim_top_
from merges.methods.tsv import TsvParams, tsv
from merges.registry import FactoredTask, Params, TensorTask, register, register_factored

# λ when `scale` is not given: the authors' Llama-3-8B configs (configs/llama8B_r16_{tv,knots_ties,
# knots_dare_ties}.py); Iso-C and TSV on the V blocks (the ACTMat repo's knots_isoc / knots_tsv) have
# no λ there, so the project's iso_c / tsv default.
DEFAULT_SCALE = {"ta": 0.5, "ties": 0.5, "dare_ties": 0.4, "iso_c": 1.0, "tsv": 1.0}
USES = {"density": ("ta", "ties", "dare_ties"), "drop_rate": ("dare_ties",), "seed": ("dare_ties",)}


class KnotsParams(Params):
    merge: Literal["ta", "ties", "dare_ties", "iso_c", "tsv"] = Field(
        "ties",
        description="the merge of the Z_t = S V_tᵀ: ta, ties, dare_ties (the official code); iso_c, "
        "tsv of the V_tᵀ blocks, then × S (the ACTMat repo's knots_isoc / knots_tsv)",
    )
    scale: float | None = Field(
        None,
        description="λ (official scaling_coeffs); unset: 0.5 for ta and ties, 0.4 for dare_ties "
        "(the authors' Llama-3-8B configs), 1.0 for iso_c and tsv",
    )
    density: float = Field(
        1.0,
        gt=0,
        le=1,
        description="fraction of each Z_t's |entries| kept, ties at the threshold kept (official "
        "topK/100: 100 in the Llama-3-8B configs, 20 for ViT-B/32); ta, ties, dare_ties",
    )
    drop_rate: float = Field(
        0.8, ge=0, lt=1, description="DARE p (official dare_pruning_coeffs, Llama-3-8B); dare_ties"
    )
    seed: int = Field(
        0,
        ge=0,
        description="DARE seed (official dare_seed): task t, tensor NAME use seed + 1000·t + "
        "crc32(NAME); dare_ties",
    )
    rtol: float = Field(
        1e-6,
        ge=0,
        lt=1,
        description="components with S ≤ rtol·S_1 are dropped (fp32 rounding of a low-rank ΔW is "
        "≈ 1e-8·S_1)",
    )
    atol: float = Field(
        0.0, ge=0, description="... and those with S ≤ atol (the official cut: 1e-5)"
    )

    @field_validator("density", "drop_rate", "seed")
    @classmethod
    def _applies(cls, value, info: ValidationInfo):
        """Only given values are validated: refuse those the chosen merge does not use."""
        merges = USES[info.field_name]
        merge = info.data.get("merge")
        if merge is not None and merge not in merges:
            raise ValueError(f"applies to merge {' or '.join(merges)}, not {merge!r}")
        return value


def kept(s: torch.Tensor, p: KnotsParams) -> int:
    """How many of the descending singular values s pass max(atol, rtol·S_1)."""
    if s.numel() == 0:
        return 0
    return int((s > max(p.atol, p.rtol * float(s[0]))).sum())


def merge_coordinates(
    name: str, u: torch.Tensor, s: torch.Tensor, z: torch.Tensor, p: KnotsParams, info: dict
) -> torch.Tensor:
    """Δ* = U Z* from U [m, k], S [k] and z [T, k, n] (z_t = S V_tᵀ = Uᵀ Δ_t), in u's dtype.

    Z_t enters the merge in float32, as in the official code (U, S, V cast after the fp64 SVD)."""
    scale = DEFAULT_SCALE[p.merge] if p.scale is None else p.scale
    info["knots_rank"] = int(s.numel())
    if s.numel() == 0:
        return u.new_zeros(u.shape[0], z.shape[-1])
    if p.merge in ("iso_c", "tsv"):
        inner = TensorTask(name, (z / s[:, None]).float(), factor_dtype=u.dtype)
        fn, params = (iso_c, IsoCParams) if p.merge == "iso_c" else (tsv, TsvParams)
        merged = s[:, None] * fn(inner, params(scale=scale)).to(u.dtype)
    else:
        zs = z.float().contiguous()
        if p.merge == "dare_ties":
            for t, zt in enumerate(zs):
                seed = p.seed + 1000 * t + zlib.crc32(name.encode())
                zt.masked_fill_(~dare_mask(zt.shape, p.drop_rate, seed).to(zt.device), 0)
                zt.div_(1.0 - p.drop_rate)
        inner = TensorTask(name, zs, factor_dtype=u.dtype)
        if p.merge == "ta":
            if p.density < 1:  # the official tv_masking trims by topK as well
                for zt in zs:
                    trim_top_(zt, p.density)
            merged = task_arithmetic(inner, TaskArithmeticParams(scale=scale))
        else:
            merged = ties(inner, TiesParams(density=p.density, scale=scale))
        merged = merged.to(u.dtype)
    info.update(inner.info)
    return u @ merged


@register("knots", KnotsParams)
def knots(task: TensorTask, p: KnotsParams):
    """KnOTS: [Δ_1 | … | Δ_T] = U S Vᵀ, Z_t = S V_tᵀ, Δ* = U·merge(Z_1 … Z_T) (Stoica et al.,
    ICLR 2025, arXiv 2410.19735; official code gstoica27/KnOTS, task_merger.py::SVDMerger).

    SVD in factor_dtype (float64 by default); components with S ≤ max(atol, rtol·S_1) dropped. The TIES trim and
    sign election act on each tensor's Z_t (the official code: on each task's Z over all LoRA
    modules at once, which a tensor-by-tensor merge cannot do); DARE masks are seeded per task and
    tensor (the official code: one global RNG). For LoRA experts (Σ_t r_t ≤ m) every V_tᵀ block has
    unit singular values, so tsv's top ⌊k/T⌋ per block is an arbitrary choice unless it is ≥ r_t.
    """
    t, m, n = task.deltas.shape
    d = task.deltas.to(task.factor_dtype).permute(1, 0, 2).reshape(m, t * n)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    k = kept(s, p)
    z = (s[:k, None] * vh[:k]).reshape(k, t, n).permute(1, 0, 2)
    return merge_coordinates(task.name, u[:, :k], s[:k], z, p, task.info).to(task.deltas.dtype)


@register_factored("knots")
def knots_factored(task: FactoredTask, p: KnotsParams):
    """KnOTS from the factors: D = [B_1 … B_T]·blockdiag(A_1 … A_T) = Q_B R_B (Q_A R_A)ᵀ with
    Q_A = blockdiag(qr(A_tᵀ)), svd(R_B R_Aᵀ) = U' S V'ᵀ, U = Q_B U', V_tᵀ = V'_tᵀ Q_tᵀ (spec §2.9)."""
    bs = torch.cat([b for b, _ in task.factors], 1)
    if bs.shape[1] == 0:
        return bs.new_zeros(task.shape)
    qb, rb = torch.linalg.qr(bs)
    qa, ra = zip(*(torch.linalg.qr(a.T) for _, a in task.factors), strict=True)
    uc, s, vch = torch.linalg.svd(rb @ torch.block_diag(*ra).T, full_matrices=False)
    k = kept(s, p)
    blocks = torch.split(s[:k, None] * vch[:k], [q.shape[1] for q in qa], 1)
    z = torch.stack([v @ q.T for v, q in zip(blocks, qa, strict=True)])
    return merge_coordinates(task.name, qb @ uc[:, :k], s[:k], z, p, task.info)
