"""Shared numerics: polar factors, PSD pseudo-inverse solves, numerical rank."""

from __future__ import annotations

import torch


def polar(x: torch.Tensor) -> torch.Tensor:
    """polar(X) = P Qᵀ for the thin SVD X = P Σ Qᵀ (nearest matrix with orthonormal columns/rows)."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def numerical_rank(s: torch.Tensor, shape: tuple[int, int], eps: float) -> int:
    """Count singular values above max(m, n)·eps·s_1 (s sorted descending).

    `eps` is the machine epsilon of the data's precision (fp32 task vectors), not of the
    factorisation's: below that, singular values are rounding noise of the input.
    """
    if s.numel() == 0 or s[0] <= 0:
        return 0
    tol = max(shape) * eps * s[0]
    return int((s > tol).sum())


def psd_pinv_right(
    b: torch.Tensor, a: torch.Tensor, rtol: float = 1e-10
) -> tuple[torch.Tensor, int]:
    """B·A⁺ for symmetric PSD A via eigh: eigenvalues ≤ rtol·λ_max are treated as zero.

    Returns the product (in B's dtype) and the rank kept. Computed in A's dtype.
    """
    lam, q = torch.linalg.eigh(a)
    keep = lam > rtol * lam.max().clamp_min(0)
    inv = torch.where(
        keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam)
    )
    return ((b.to(a.dtype) @ q) * inv) @ q.T, int(keep.sum())


def spd_solve_right(
    b: torch.Tensor, a: torch.Tensor, max_ridge: float = 1e-4
) -> tuple[torch.Tensor, float]:
    """B·A⁻¹ for symmetric positive definite A by Cholesky.

    If the factorisation fails, a relative ridge λ_r·tr(A)/n·I is added with λ_r = 1e-6, 1e-5,
    ... up to `max_ridge`; the ridge used (0.0 when none) is returned so it can be recorded.
    """
    n = a.shape[0]
    scale = torch.trace(a) / n
    ridge = 0.0
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    while True:
        chol, info = torch.linalg.cholesky_ex(a + ridge * scale * eye)
        if int(info) == 0:
            # X A = B  <=>  A Xᵀ = Bᵀ (A symmetric)
            return torch.cholesky_solve(b.to(a.dtype).T, chol).T, ridge
        ridge = 1e-6 if ridge == 0.0 else ridge * 10
        if ridge > max_ridge * (1 + 1e-9):
            raise FloatingPointError(
                f"matrix is not positive definite even with a relative ridge of {max_ridge:g}"
            )
