"""Shared numerics: Grams by BLAS syrk, thin SVDs and polar factors via Gram eigh (SVD fallback), PSD pseudo-inverse solves, numerical rank."""

from __future__ import annotations

import torch


def gram_rtol(dtype: torch.dtype) -> float:
    """Smallest s/s_1 for which the Gram route is used: its error ≈ eps·κ² ≤ 1e-7 (fp32 output rounding).

    √(1e7·eps): 4.7e-5 in float64; above 1 in float32, where the Gram route is never used.
    """
    return (1e7 * torch.finfo(dtype).eps) ** 0.5


def _sym_eigh(
    g: torch.Tensor, top: int | None = None, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric g (overwritten if `overwrite`).

    `top`: only the k largest pairs. On CPU in float64 through scipy's LAPACK (dsyevd, or dsyevr
    for a subset: ≈ 1.2× torch's dsyevd on 2 cores, and 2.5× for the top 1/15); elsewhere torch.
    """
    n = g.shape[0]
    if g.device.type == "cpu" and g.dtype == torch.float64 and n > 1:
        import scipy.linalg

        subset = None if top is None or top >= n else [n - top, n - 1]
        lam, q = scipy.linalg.eigh(
            g.numpy().T,  # Fortran order, as LAPACK wants (g is symmetric): no copy
            driver="evd" if subset is None else "evr",
            subset_by_index=subset,
            overwrite_a=overwrite,
            check_finite=False,
        )
        return torch.from_numpy(lam), torch.from_numpy(q)
    lam, q = torch.linalg.eigh(g)
    return (lam, q) if top is None else (lam[-top:], q[:, -top:])


def _positive_definite_after_shift(a: torch.Tensor, shift) -> bool:
    """Whether A − shift·I has a Cholesky factor (every eigenvalue of symmetric A above shift)."""
    shifted = a.clone()
    shifted.diagonal().sub_(shift)
    return int(torch.linalg.cholesky_ex(shifted)[1]) == 0


def _condition_below(g: torch.Tensor, rtol: float) -> bool:
    """Cheap pre-test that λ_min(G) > rtol²·λ_max(G) for a PSD Gram G (so that σ_min > rtol·σ_1).

    λ_max from 30 power iterations (a lower bound, so the test can pass a borderline G, which
    the exact check after eigh then catches), then a Cholesky of G − rtol²·λ_max·I: n³/3 flops
    where the eigh it may save costs ≈ 10 n³.
    """
    n = g.shape[0]
    v = torch.ones(n, 1, dtype=g.dtype, device=g.device)
    lam = torch.zeros((), dtype=g.dtype, device=g.device)
    for _ in range(30):
        w = g @ v
        lam = torch.linalg.vector_norm(w)
        if lam == 0:
            return False
        v = w / lam
    return _positive_definite_after_shift(g, rtol**2 * lam)


def _syrk(x: torch.Tensor, trans: int) -> torch.Tensor | None:
    """scipy's BLAS dsyrk on a C-contiguous CPU float64 x (as the F-ordered xᵀ, no copy), both
    triangles filled; None where that does not apply."""
    if x.device.type != "cpu" or x.dtype != torch.float64 or not x.is_contiguous() or 0 in x.shape:
        return None
    from scipy.linalg.blas import dsyrk

    c = torch.from_numpy(dsyrk(1.0, x.numpy().T, trans=trans))  # upper triangle, zeros below
    n, b = c.shape[0], 1024
    for i in range(0, n, b):  # mirror in blocks: no n×n temporary (11008² fp64 is 0.97 GB)
        j = min(i + b, n)
        c[i:j, :i] = c[:i, i:j].T
        diag = c[i:j, i:j]
        diag.copy_(diag.triu() + diag.triu(1).T)
    return c


def xtx(x: torch.Tensor) -> torch.Tensor:
    """XᵀX. On CPU in float64 by BLAS syrk: half the flops of the matmul, which torch does not
    detect."""
    c = _syrk(x, 0)  # (xᵀ)(xᵀ)ᵀ
    return x.T @ x if c is None else c


def xxt(x: torch.Tensor) -> torch.Tensor:
    """XXᵀ, as xtx."""
    c = _syrk(x, 1)  # (xᵀ)ᵀ(xᵀ)
    return x @ x.T if c is None else c


def _gram(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The smaller side's Gram (XᵀX if m ≥ n, else XXᵀ) and whether X is tall."""
    tall = x.shape[0] >= x.shape[1]
    return (xtx(x) if tall else xxt(x)), tall


def _gram_eigh(g: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """σ (descending) and the singular vectors of the smaller side from eigh of its Gram g (overwritten)."""
    lam, q = _sym_eigh(g, top, overwrite=True)
    return lam.flip(0).clamp_min(0).sqrt(), q.flip(1)


PARTIAL_EIGH_MAX_FRACTION = 1 / 6
"""top_svd asks the eigensolver for the top k pairs only when k ≤ this fraction of r (dsyevr's
subset pays off only well below r/3 on CPU)."""


def top_svd(
    x: torch.Tensor, k: int | None = None, rank_eps: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top triplets (U [m, k'], s [k'], V [n, k']) of the thin SVD X = U diag(s) Vᵀ, in x's dtype.

    k' = min(k, numerical_rank(s, eps=rank_eps)) (k = r and no rank cut by default). Computed
    from eigh of the smaller side's Gram (XᵀX if m ≥ n, else XXᵀ), its top k pairs only when
    k ≤ r/6: s = √λ, the other side's vectors as X v / s (or Xᵀ u / s). That is accurate to
    ≈ eps·(s_1/s)², so it is used only when every kept s > gram_rtol·s_1; otherwise (and always
    in float32) torch.linalg.svd. For k = r a Cholesky pre-test skips the eigh when it would fail.
    """
    m, n = x.shape
    r = min(m, n)
    if k is not None and k < 0:
        raise ValueError(f"top_svd: k = {k} < 0")
    k = r if k is None else min(k, r)
    rtol = gram_rtol(x.dtype)
    if rtol < 1:
        g, tall = _gram(x)
        if k < r or rank_eps is not None or _condition_below(g, rtol):
            s, q = _gram_eigh(g, k if 0 < k <= PARTIAL_EIGH_MAX_FRACTION * r else None)
            kt = k if rank_eps is None else min(k, numerical_rank(s[:k], (m, n), rank_eps))
            if kt == 0 or s[kt - 1] > rtol * s[0]:
                s, q = s[:kt], q[:, :kt]
                other = (x @ q if tall else x.T @ q) / s
                return (other, s, q) if tall else (q, s, other)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    kt = k if rank_eps is None else min(k, numerical_rank(s, (m, n), rank_eps))
    return u[:, :kt], s[:kt], vh[:kt].T


def polar_and_singular_values(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(polar(X), s): polar(X) = U Vᵀ for the thin SVD X = U diag(s) Vᵀ, s descending, in x's dtype.

    polar(X) = X G^{-1/2} with G = XᵀX (m ≥ n), else G^{-1/2} X with G = XXᵀ, from eigh of G, when
    s_min > gram_rtol·s_1 (error ≈ eps·κ² ≤ 1e-7; a Cholesky pre-test skips the eigh when it
    would fail); otherwise torch.linalg.svd.
    """
    rtol = gram_rtol(x.dtype)
    if rtol < 1:
        g, tall = _gram(x)
        if _condition_below(g, rtol):
            s, q = _gram_eigh(g)
            if s.numel() and s[-1] > rtol * s[0]:
                isqrt = xxt(q / s.sqrt())  # Q diag(1/s) Qᵀ
                return (x @ isqrt if tall else isqrt @ x), s
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh, s


def polar(x: torch.Tensor) -> torch.Tensor:
    """polar(X) = U Vᵀ for the thin SVD X = U Σ Vᵀ (nearest matrix with orthonormal columns/rows)."""
    return polar_and_singular_values(x)[0]


def numerical_rank(s: torch.Tensor, shape: tuple[int, int], eps: float) -> int:
    """Count singular values above max(m, n)·eps·s_1 (s sorted descending).

    `eps` is the machine epsilon of the data's precision (fp32 task vectors), not of the
    factorisation's: below that, singular values are rounding noise of the input.
    """
    if s.numel() == 0 or s[0] <= 0:
        return 0
    tol = max(shape) * eps * s[0]
    return int((s > tol).sum())


def _chol_solve_right(b: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """B·A⁻¹ for A = L Lᵀ: two triangular solves X L = Y, Y Lᵀ = B (no transposed copies)."""
    y = torch.linalg.solve_triangular(chol.T, b, upper=True, left=False)
    return torch.linalg.solve_triangular(chol, y, upper=False, left=False)


def psd_pinv_right(
    b: torch.Tensor, a: torch.Tensor, rtol: float = 1e-10
) -> tuple[torch.Tensor, int]:
    """B·A⁺ for symmetric PSD A: eigenvalues ≤ rtol·λ_max are treated as zero. Computed in A's dtype.

    Returns the product and the rank kept. When A − rtol·‖A‖_F·I has a Cholesky factor, no
    eigenvalue is cut (‖A‖_F ≥ λ_max), so A⁺ = A⁻¹ and the product is a Cholesky solve; else
    B Q diag(1/λ) Qᵀ over the kept eigenpairs of eigh(A).
    """
    b = b.to(a.dtype)
    n = a.shape[0]
    if _positive_definite_after_shift(a, rtol * torch.linalg.matrix_norm(a)):
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return _chol_solve_right(b, chol), n
    lam, q = _sym_eigh(a)
    keep = lam > rtol * lam.max().clamp_min(0)
    inv = torch.where(
        keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam)
    )
    return ((b @ q) * inv) @ q.T, int(keep.sum())


def spd_solve_right(
    b: torch.Tensor, a: torch.Tensor, max_ridge: float = 1e-4
) -> tuple[torch.Tensor, float]:
    """B·A⁻¹ for symmetric positive definite A by Cholesky, in A's dtype.

    If the factorisation fails, a relative ridge λ_r·tr(A)/n·I is added with λ_r = 1e-6, 1e-5,
    ... up to `max_ridge`; the ridge used (0.0 when none) is returned so it can be recorded.
    """
    b = b.to(a.dtype)
    scale = torch.trace(a) / a.shape[0]
    ridge = 0.0
    while True:
        if ridge == 0.0:
            chol, info = torch.linalg.cholesky_ex(a)
        else:
            shifted = a.clone()
            shifted.diagonal().add_(ridge * scale)
            chol, info = torch.linalg.cholesky_ex(shifted)
            del shifted
        if int(info) == 0:
            return _chol_solve_right(b, chol), ridge
        ridge = 1e-6 if ridge == 0.0 else ridge * 10
        if ridge > max_ridge * (1 + 1e-9):
            raise FloatingPointError(
                f"matrix is not positive definite even with a relative ridge of {max_ridge:g}"
            )


def factor_span(
    factors: list[tuple[torch.Tensor, torch.Tensor]], ones: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Δ_t = B_t A_t = L (b_t a_t) Pᵀ, with L, P orthonormal bases of [B_1 … B_T] and [A_1ᵀ … A_Tᵀ].

    Returns L [m, q], P [n, p] (reduced QR; a column of ones appended to both stacks if `ones`)
    and per expert (b_t = LᵀB_t [q, r_t], a_t = A_t P [r_t, p]), all in float64.
    """
    bs = [b.to(torch.float64) for b, _ in factors]
    ats = [a.to(torch.float64).T for _, a in factors]
    if ones:
        bs.append(torch.ones_like(bs[0][:, :1]))
        ats.append(torch.ones_like(ats[0][:, :1]))
    left, rb = torch.linalg.qr(torch.cat(bs, 1))
    right, ra = torch.linalg.qr(torch.cat(ats, 1))
    cores, j = [], 0
    for b, _ in factors:
        r = b.shape[1]
        cores.append((rb[:, j : j + r], ra[:, j : j + r].T))
        j += r
    return left, right, cores


def product_svd(
    b: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B A = U diag(s) Vᵀ (B [q, r], A [r, p]; s descending, k = min(q, r, p) triplets) from the QRs
    of B and Aᵀ and the SVD of their small product."""
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return qb @ u, s, qa @ vh.T


def expand(
    left: torch.Tensor,
    core: torch.Tensor,
    right: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    block_elements: int = 1 << 23,
) -> torch.Tensor:
    """L C Pᵀ as a dense [m, n] tensor of `dtype`, formed in row blocks in L's dtype (no m×n temporary)."""
    lc = left @ core
    m, n = lc.shape[0], right.shape[0]
    out = torch.empty(m, n, dtype=dtype, device=lc.device)
    step = max(1, block_elements // max(n, 1))
    for i in range(0, m, step):
        out[i : i + step] = lc[i : i + step] @ right.T
    return out
