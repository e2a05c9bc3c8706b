import functools
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from merges.errors import MergeInputError
from merges.linalg import polar_and_singular_values
from merges.registry import (
    FactoredTask,
    Method,
    Params,
    TensorTask,
    methods,
    register,
    register_factored,
)


class CoreSpaceParams(Params):
    merge: str = Field(
        "tsv",
        description="the registered method that merges the cores (one without statistics or W_0; "
        "tsv: the authors' configs/vitB_r16_core_tsv.py)",
    )
    merge_params: str = Field(
        "",
        description="its parameters as KEY=VALUE,KEY=VALUE (a per-expert value: V1;V2;…); its "
        "defaults otherwise",
    )
    isotropize: bool = Field(
        False, description="M* ← mean(σ(M*))·polar(M*) after the merge (the official isotropize)"
    )
    basis: Literal["factors", "svd"] = Field(
        "factors",
        description="factors: bases from the given B_t, A_t (official; dense task vectors are "
        "factored as U_t√S_t, √S_t V_tᵀ); svd: from that factoring on both paths, so the merge "
        "depends on the Δ_t alone",
    )
    rtol: float = Field(
        1e-6,
        ge=0,
        lt=1,
        description="singular values ≤ rtol·σ_1 count as zero (each Δ_t's factoring, the stacks' "
        "bases)",
    )

    @field_validator("merge")
    @classmethod
    def _mergeable(cls, name: str) -> str:
        if name == "core_space":
            raise ValueError("core_space cannot merge its own cores")
        m = methods().get(name)
        if m is None:
            raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(methods())}")
        if m.needs_stats or m.needs_base:
            need = "input statistics" if m.needs_stats else "W_0"
            raise ValueError(f"{name!r} reads {need}, which the core space does not have")
        return name

    @field_validator("merge_params")
    @classmethod
    def _parses(cls, text: str, info: ValidationInfo) -> str:
        if "merge" in info.data:  # else `merge` itself was refused
            try:
                inner_method(info.data["merge"], text)
            except MergeInputError as e:
                raise ValueError(str(e)) from None
        return text


@functools.lru_cache(maxsize=64)
def inner_method(name: str, text: str) -> tuple[Method, Params]:
    """The core merge and its parameters from `merge` and `merge_params`."""
    raw: dict[str, object] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MergeInputError(f"merge_params item {item!r} is not KEY=VALUE")
        value = value.strip()
        raw[key.strip()] = [v.strip() for v in value.split(";")] if ";" in value else value
    method = methods()[name]
    return method, method.parse_params(raw)


def basis(x: torch.Tensor, rtol: float) -> torch.Tensor:
    """Left singular vectors of x with σ > rtol·σ_1: an orthonormal basis of its column space."""
    if x.shape[1] == 0:
        return x
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    return u[:, : int((s > rtol * s[0]).sum()) if s.numel() else 0]


def svd_factors(b: torch.Tensor, a: torch.Tensor, rtol: float):
    """(U√S, √S Vᵀ) for the thin SVD U S Vᵀ of B A, σ > rtol·σ_1 kept, from the factors' QRs."""
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    k = int((s > rtol * s[0]).sum()) if s.numel() else 0
    root = s[:k].sqrt()
    return (qb @ u[:, :k]) * root, root[:, None] * (vh[:k] @ qa.T)


def dense_factors(d: torch.Tensor, rtol: float):
    """(U√S, √S Vᵀ) for the thin SVD U S Vᵀ of d, σ > rtol·σ_1 kept."""
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    k = int((s > rtol * s[0]).sum()) if s.numel() else 0
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def merge_in_core(name, factors, shape, dtype, p: CoreSpaceParams, info: dict) -> torch.Tensor:
    """Δ* = U_B·merge(M_1 … M_T)·V_Aᵀ, M_t = U_Bᵀ B_t A_t V_A, in `dtype` (the cores enter the
    merge in float32, as task vectors do)."""
    method, inner_p = inner_method(p.merge, p.merge_params)
    method.check_expert_count(len(factors))
    ub = basis(torch.cat([b for b, _ in factors], 1), p.rtol)
    va = basis(torch.cat([a for _, a in factors], 0).T, p.rtol)
    info["core_shape"] = [ub.shape[1], va.shape[1]]
    if ub.shape[1] == 0 or va.shape[1] == 0:
        return torch.zeros(shape, dtype=dtype, device=ub.device)
    cores = torch.stack([(ub.T @ b) @ (a @ va) for b, a in factors])
    inner = TensorTask(name, cores.float(), None, dtype)
    merged = method.fn(inner, inner_p).to(dtype)
    info.update(inner.info)
    if p.isotropize:
        pol, s = polar_and_singular_values(merged)
        merged = s.mean() * pol
    return ub @ merged @ va.T


@register("core_space", CoreSpaceParams)
def core_space(task: TensorTask, p: CoreSpaceParams):
    """Core Space: M_t = U_Bᵀ B_t A_t V_A with U_B, V_A the bases of [B_1 … B_T] and
    [A_1; …; A_T], Δ* = U_B·merge(M_1 … M_T)·V_Aᵀ (Panariello et al., NeurIPS 2025, arXiv
    2509.17786; official code apanariello4/core-space-merging, task_merger.py::MatrixPerLayerMerger).

    Dense task vectors are factored first, Δ_t = (U_t√S_t)(√S_t V_tᵀ) (σ > rtol·σ_1). Bases keep
    σ > rtol·σ_1 (the official code keeps the zero ones of a rank-deficient stack as well).
    """
    d = task.deltas.to(task.factor_dtype)
    factors = [dense_factors(x, p.rtol) for x in d]
    merged = merge_in_core(task.name, factors, d.shape[1:], d.dtype, p, task.info)
    return merged.to(task.deltas.dtype)


@register_factored("core_space")
def core_space_factored(task: FactoredTask, p: CoreSpaceParams):
    """Core Space from the factors (B_t, A_t), as the official code; basis=svd refactors each as
    (U_t√S_t, √S_t V_tᵀ) first, as the dense path does."""
    factors = task.factors
    if p.basis == "svd":
        factors = [svd_factors(b, a, p.rtol) for b, a in factors]
    return merge_in_core(task.name, factors, task.shape, task.factor_dtype, p, task.info)
