"""Every branch of merges.linalg against fp64 references (numpy's LAPACK SVD, eigh, solve, pinv).

Inputs are built so that each branch is forced (tall, wide and square; rank-deficient; the Gram
route and its SVD fallback; the partial and the full eigensolve; the Cholesky fast path and the
eigen path; the ridge ladder and its failure). Where a test depends on the route taken, a spy
asserts the route too, so that the branch is not only executed but shown to be the one taken.

Tolerances: a backward-stable fp64 factorisation is accurate to ≈ c·n·eps·κ (eps = 2.2e-16); the
Gram route to ≈ eps·κ² (merges.linalg's docstrings). Inputs here have n ≤ 40 and κ ≤ 10 where
the Gram route is expected, so 1e-12 (relative) holds with a margin of > 100; fp32 inputs use
eps32 = 1.2e-7 in place of eps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merges import linalg
from merges.linalg import (
    gram_rtol,
    numerical_rank,
    polar,
    polar_and_singular_values,
    psd_pinv_right,
    spd_solve_right,
    top_svd,
    xtx,
    xxt,
)

EPS32 = float(np.finfo(np.float32).eps)


def spectrum_matrix(m, n, s, seed=0):
    """U diag(s) Vᵀ with random orthonormal U [m, r], V [n, r] (fp64 numpy), r = len(s)."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((m, len(s))))[0]
    v = np.linalg.qr(rng.standard_normal((n, len(s))))[0]
    return (u * np.asarray(s, dtype=float)) @ v.T


def spd(lam, seed=0):
    """Q diag(λ) Qᵀ with a random orthogonal Q, exactly symmetric (fp64 numpy)."""
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))[0]
    a = (q * np.asarray(lam, dtype=float)) @ q.T
    return (a + a.T) / 2


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def projector(q):
    q = np.asarray(q, dtype=float)
    return q @ q.T


@pytest.fixture
def svd_calls(monkeypatch):
    """Counts torch.linalg.svd calls (the fallback route of top_svd and polar)."""
    calls = []
    real = torch.linalg.svd

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", spy)
    return calls


@pytest.fixture
def eigh_tops(monkeypatch):
    """The `top` argument of every eigensolve (None: all pairs)."""
    tops = []
    real = linalg._sym_eigh

    def spy(g, top=None, overwrite=False):
        tops.append(top)
        return real(g, top, overwrite)

    monkeypatch.setattr(linalg, "_sym_eigh", spy)
    return tops


# ---- the rtol that gates the Gram route ----


def test_gram_rtol_enables_the_gram_route_in_float64_only():
    assert gram_rtol(torch.float64) == pytest.approx((1e7 * 2.0**-52) ** 0.5)
    assert gram_rtol(torch.float64) < 1e-4
    assert gram_rtol(torch.float32) > 1  # never: σ_min/σ_1 ≤ 1 always


# ---- Grams by syrk, and their fallbacks ----


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: torch.from_numpy(a), id="syrk-fp64"),
        pytest.param(lambda a: torch.from_numpy(a.T.copy()).T, id="matmul-non-contiguous"),
        pytest.param(lambda a: torch.from_numpy(a).float(), id="matmul-fp32"),
    ],
)
@pytest.mark.parametrize("shape", [(9, 5), (5, 9), (3, 1100)])
def test_xtx_xxt_match_numpy(make, shape):
    """(3, 1100): XᵀX is 1100 × 1100, so syrk's upper triangle is mirrored in two 1024-row blocks."""
    a = np.random.default_rng(1).standard_normal(shape)
    x = make(a)
    tol = 1e-13 if x.dtype == torch.float64 else 4 * EPS32 * shape[0]
    for got, want in ((xtx(x), a.T @ a), (xxt(x), a @ a.T)):
        assert got.dtype == x.dtype and got.shape == want.shape
        assert np.abs(got.double().numpy() - want).max() <= tol * np.abs(want).max()
        if x.dtype == torch.float64 and x.is_contiguous():  # syrk: the mirrored triangle
            assert torch.equal(got, got.T)


def test_empty_grams_are_zero():
    x = torch.zeros(0, 4, dtype=torch.float64)
    assert torch.equal(xtx(x), torch.zeros(4, 4, dtype=torch.float64))
    assert xxt(x).shape == (0, 0)


# ---- the eigensolver ----


@pytest.mark.parametrize(
    "dtype, n, top",
    [
        (torch.float64, 7, None),  # scipy dsyevd
        (torch.float64, 7, 2),  # scipy dsyevr, a subset
        (torch.float64, 7, 7),  # top ≥ n: all pairs by dsyevd
        (torch.float64, 1, None),  # n = 1: torch
        (torch.float32, 7, None),  # fp32: torch
        (torch.float32, 7, 3),  # fp32, a subset: torch's full eigh, sliced
    ],
)
def test_sym_eigh_against_numpy(dtype, n, top):
    g = spd(np.linspace(1.0, 3.0, n), seed=n)
    lam, q = linalg._sym_eigh(torch.from_numpy(g).to(dtype), top)
    want = np.linalg.eigh(g)[0]
    k = n if top is None else min(top, n)
    tol = 1e-13 if dtype == torch.float64 else 20 * EPS32
    assert lam.dtype == dtype and q.shape == (n, k)
    assert np.abs(lam.double().numpy() - want[n - k :]).max() <= tol * 3
    # eigenvectors: g q = q diag(λ), orthonormal
    qd, ld = q.double().numpy(), lam.double().numpy()
    assert np.abs(g @ qd - qd * ld).max() <= 10 * tol * 3
    assert np.abs(qd.T @ qd - np.eye(k)).max() <= 10 * tol


def test_sym_eigh_leaves_the_input_intact_unless_asked():
    g = torch.from_numpy(spectrum_matrix(5, 5, [1, 2, 3, 4, 5]))
    g = (g + g.T) / 2
    keep = g.clone()
    linalg._sym_eigh(g)
    assert torch.equal(g, keep)


def test_condition_pre_test_on_a_zero_gram_is_false():
    """λ_max = 0: the power iteration stops at once (no division by zero)."""
    assert not linalg._condition_below(torch.zeros(4, 4, dtype=torch.float64), 1e-3)


# ---- top_svd ----


def _check_triplets(x, u, s, v, k, tol):
    """Against numpy's fp64 SVD: the top k values, the reconstruction of the top-k part of x,
    orthonormal U and V (the singular values here are distinct, so the top-k part is unique)."""
    uu, ss, vt = np.linalg.svd(x, full_matrices=False)
    u, s, v = (t.double().numpy() for t in (u, s, v))
    assert u.shape == (x.shape[0], k) and s.shape == (k,) and v.shape == (x.shape[1], k)
    assert np.abs(s - ss[:k]).max() <= tol * ss[0]
    assert rel((u * s) @ v.T, (uu[:, :k] * ss[:k]) @ vt[:k]) <= tol
    assert np.abs(u.T @ u - np.eye(k)).max() <= tol
    assert np.abs(v.T @ v - np.eye(k)).max() <= tol


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (30, 30)], ids=["tall", "wide", "square"])
def test_top_svd_full_rank_by_the_gram_route(shape, svd_calls, eigh_tops):
    """k = r, κ = 10: the Cholesky pre-test passes, one full eigh, no SVD."""
    r = min(shape)
    x = spectrum_matrix(*shape, np.geomspace(10.0, 1.0, r), seed=2)
    u, s, v = top_svd(torch.from_numpy(x))
    _check_triplets(x, u, s, v, r, 1e-12)
    assert svd_calls == [] and eigh_tops == [None]


@pytest.mark.parametrize("shape", [(40, 30), (30, 40)], ids=["tall", "wide"])
def test_top_svd_partial_eigh_for_k_at_most_r_over_6(shape, svd_calls, eigh_tops):
    """k = 5 = r/6: dsyevr asked for the top 5 pairs only; the rest of the spectrum is unseen."""
    x = spectrum_matrix(*shape, np.geomspace(10.0, 0.01, 30), seed=3)
    u, s, v = top_svd(torch.from_numpy(x), 5)
    _check_triplets(x, u, s, v, 5, 1e-12)  # κ of the kept part: 10/s_5 ≈ 3.3
    assert svd_calls == [] and eigh_tops == [5]


def test_top_svd_k_above_r_over_6_uses_the_full_eigh(svd_calls, eigh_tops):
    x = spectrum_matrix(40, 30, np.geomspace(10.0, 0.01, 30), seed=3)
    u, s, v = top_svd(torch.from_numpy(x), 6)
    _check_triplets(x, u, s, v, 6, 1e-12)
    assert svd_calls == [] and eigh_tops == [None]


def test_top_svd_k_above_r_is_r(svd_calls):
    x = spectrum_matrix(12, 8, np.geomspace(4.0, 1.0, 8), seed=4)
    u, s, v = top_svd(torch.from_numpy(x), 50)
    _check_triplets(x, u, s, v, 8, 1e-12)
    assert svd_calls == []


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)], ids=["tall", "wide"])
def test_top_svd_ill_conditioned_falls_back_to_the_svd(shape, svd_calls, eigh_tops):
    """κ = 1e8 > 1/gram_rtol: the pre-test fails, no eigh, torch's SVD (the Gram route would
    lose ≈ eps·κ² = 2 in relative accuracy of the small values)."""
    x = spectrum_matrix(*shape, np.geomspace(1.0, 1e-8, 24), seed=5)
    u, s, v = top_svd(torch.from_numpy(x))
    _check_triplets(x, u, s, v, 24, 1e-12)
    ss = np.linalg.svd(x, compute_uv=False)
    assert np.abs(s.numpy()[-1] - ss[-1]) <= 1e-6 * ss[-1]  # σ_min itself, to ≈ eps·κ
    assert len(svd_calls) == 1 and eigh_tops == []


def test_top_svd_kept_value_below_gram_rtol_falls_back_after_the_eigh(svd_calls, eigh_tops):
    """k < r skips the pre-test; the eigh shows s_k ≤ gram_rtol·s_1, so the SVD is used."""
    x = spectrum_matrix(30, 20, np.geomspace(1.0, 1e-7, 20), seed=6)
    u, s, v = top_svd(torch.from_numpy(x), 18)
    _check_triplets(x, u, s, v, 18, 1e-12)
    assert len(svd_calls) == 1 and eigh_tops == [None]


@pytest.mark.parametrize("shape", [(20, 12), (12, 20)], ids=["tall", "wide"])
def test_top_svd_rank_deficient_with_rank_cut(shape, svd_calls):
    """Rank 4 of r = 12, rank_eps = eps32: the Gram route's values for the zero singular values
    are √(rounding of the Gram) ≈ √(eps·s_1²) ≈ 1e-8·s_1, below the rank tolerance
    max(m, n)·eps32·s_1 = 2.4e-6·s_1, so exactly the 4 true triplets are kept, by the Gram route
    (s_4/s_1 = 1/3 > gram_rtol)."""
    x = spectrum_matrix(*shape, [3.0, 2.0, 1.5, 1.0], seed=7)
    u, s, v = top_svd(torch.from_numpy(x), rank_eps=EPS32)
    _check_triplets(x, u, s, v, 4, 1e-12)
    assert svd_calls == []


def test_top_svd_rank_deficient_without_a_rank_cut_uses_the_svd(svd_calls):
    """k = r, no rank_eps: the pre-test fails on the singular Gram; the SVD returns all r triplets
    (the trailing ones of singular value ≈ 0)."""
    x = spectrum_matrix(20, 12, [3.0, 2.0, 1.5, 1.0], seed=7)
    u, s, v = top_svd(torch.from_numpy(x))
    assert s.shape == (12,) and len(svd_calls) == 1
    assert np.abs(s.numpy()[:4] - [3.0, 2.0, 1.5, 1.0]).max() <= 1e-13
    assert np.abs(s.numpy()[4:]).max() <= 1e-14
    assert rel((u * s) @ v.T, x) <= 1e-13


def test_top_svd_rank_cut_below_gram_rtol_is_counted_on_the_svd(svd_calls):
    """rank_eps = eps64 keeps s = 1e-6·s_1 (numerical rank 10), but 1e-6 < gram_rtol: the SVD's
    values are accurate there, and its rank count applies."""
    x = spectrum_matrix(20, 10, np.geomspace(1.0, 1e-6, 10), seed=8)
    u, s, v = top_svd(torch.from_numpy(x), rank_eps=2.0**-52)
    _check_triplets(x, u, s, v, 10, 1e-12)
    assert len(svd_calls) == 1


def test_top_svd_of_zero_keeps_nothing():
    u, s, v = top_svd(torch.zeros(6, 4, dtype=torch.float64), rank_eps=EPS32)
    assert u.shape == (6, 0) and s.shape == (0,) and v.shape == (4, 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_top_svd_k_zero_keeps_nothing(dtype, shape):
    """k = 0 (TSV with more tasks than r: k = ⌊r/T⌋ = 0) gives empty triplets on every route
    (the fp64 CPU route asked dsyevr for the pairs n..n−1, a ValueError)."""
    x = torch.from_numpy(spectrum_matrix(*shape, [2.0, 1.5, 1.0, 0.5])).to(dtype)
    u, s, v = top_svd(x, 0)
    assert u.shape == (shape[0], 0) and s.shape == (0,) and v.shape == (shape[1], 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_top_svd_negative_k_is_refused(dtype):
    """k < 0 (iso_cts's k_c = r − k_ts when k_ts > r) was r − |k| triplets by the SVD's slicing
    on the fp32 route and a scipy ValueError on the fp64 one; now an error on both."""
    x = torch.from_numpy(spectrum_matrix(6, 4, [2.0, 1.5, 1.0, 0.5])).to(dtype)
    with pytest.raises(ValueError, match="k = -1 < 0"):
        top_svd(x, -1)


def test_top_svd_one_row_gives_its_norm_and_direction():
    """A 1 × n input: a 1 × 1 Gram, solved by torch's eigh (scipy's path needs n > 1)."""
    a = np.array([[3.0, 0.0, -4.0, 12.0]])
    u, s, v = top_svd(torch.from_numpy(a))
    assert np.allclose(s.numpy(), [13.0], rtol=1e-15, atol=0)
    assert np.allclose(np.abs(u.numpy()), [[1.0]], rtol=1e-15)
    assert rel((u * s) @ v.T, a) <= 1e-15


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)], ids=["tall", "wide"])
def test_top_svd_float32_always_uses_the_svd(shape, svd_calls, eigh_tops):
    """gram_rtol(fp32) > 1: never the Gram route. Reference: numpy's fp64 SVD of the same fp32
    values; fp32 SVD accuracy ≈ n·eps32·κ (κ = 10 here) → 1e-4 relative."""
    x = spectrum_matrix(*shape, np.geomspace(10.0, 1.0, 24), seed=9).astype(np.float32)
    u, s, v = top_svd(torch.from_numpy(x), 3, rank_eps=EPS32)
    _check_triplets(x.astype(float), u, s, v, 3, 1e-4)
    assert len(svd_calls) == 1 and eigh_tops == []
    # and a rank cut on the SVD's values: rank 2 of a 24-wide fp32 matrix
    y = spectrum_matrix(*shape, [5.0, 1.0], seed=10).astype(np.float32)
    assert top_svd(torch.from_numpy(y), rank_eps=EPS32)[1].shape == (2,)


# ---- numerical_rank ----


def test_numerical_rank_counts_values_strictly_above_the_tolerance():
    s = torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    # tol = max(m, n)·eps·s_1 = 4·(1/16)·2 = 0.5: 0.5 itself is not above it
    assert numerical_rank(s, (4, 3), 1 / 16) == 2
    assert numerical_rank(s, (4, 3), 1e-3) == 4
    assert numerical_rank(torch.zeros(0, dtype=torch.float64), (4, 3), 1e-3) == 0
    assert numerical_rank(torch.zeros(3, dtype=torch.float64), (4, 3), 1e-3) == 0


# ---- polar ----


def _numpy_polar(x):
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (30, 30)], ids=["tall", "wide", "square"])
def test_polar_by_the_gram_route(shape, svd_calls):
    """κ = 10: X G^{-1/2} (or G^{-1/2} X) from one eigh, no SVD; polar's condition number is
    ≈ 1/σ_min, so both agree to ≈ eps·κ."""
    x = spectrum_matrix(*shape, np.geomspace(10.0, 1.0, min(shape)), seed=11)
    p, s = polar_and_singular_values(torch.from_numpy(x))
    assert rel(p.numpy(), _numpy_polar(x)) <= 1e-12
    assert np.abs(s.numpy() - np.linalg.svd(x, compute_uv=False)).max() <= 1e-12 * 10
    assert svd_calls == []
    assert torch.equal(polar(torch.from_numpy(x)), p)


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)], ids=["tall", "wide"])
def test_polar_ill_conditioned_uses_the_svd(shape, svd_calls):
    """κ = 1e8: the pre-test fails, so no eigh. polar(X) of a full-rank rectangular X is
    perturbed by ≈ ‖ΔX‖/σ_min ≈ eps·κ ≈ 2e-8 under backward-stable SVDs: 1e-6 is safe, and the
    Gram route (error ≈ eps·κ² ≫ 1) could not meet it."""
    x = spectrum_matrix(*shape, np.geomspace(1.0, 1e-8, 24), seed=12)
    p, s = polar_and_singular_values(torch.from_numpy(x))
    assert rel(p.numpy(), _numpy_polar(x)) <= 1e-6
    assert len(svd_calls) == 1


def test_polar_rank_deficient_uses_the_svd(svd_calls):
    """Rank 3 of 12: the pre-test's Cholesky fails on the singular Gram. polar(X) is then not
    unique (any completion of the null space will do); what every polar factor satisfies is
    checked: orthonormal columns (the SVD completes the basis) and P (XᵀX)^{1/2} = X, with
    (XᵀX)^{1/2} = V_3 diag(s_3) V_3ᵀ from numpy's SVD; both to ≈ eps."""
    x = spectrum_matrix(20, 12, [3.0, 2.0, 1.0], seed=13)
    p, s = polar_and_singular_values(torch.from_numpy(x))
    p = p.numpy()
    assert len(svd_calls) == 1
    _, ss, vt = np.linalg.svd(x, full_matrices=False)
    root = (vt[:3].T * ss[:3]) @ vt[:3]
    assert rel(p @ root, x) <= 1e-13
    assert np.abs(p.T @ p - np.eye(12)).max() <= 1e-13
    assert np.abs(s.numpy()[:3] - [3.0, 2.0, 1.0]).max() <= 1e-13


def test_polar_borderline_spectrum_passes_the_pre_test_then_falls_back(svd_calls, eigh_tops):
    """The pre-test's λ_max is a power-iteration lower bound. X = Q D Qᵀ with Q = H/2 (H the
    4 × 4 Hadamard matrix) has the all-ones vector as the eigenvector of its smallest value
    2^-19, so the power iteration from ones stays there (every product is exact in binary) and
    the shifted Cholesky passes; the exact eigh then sees σ_min/σ_1 = 2^-19 < gram_rtol and the
    SVD is used. The Gram route would have erred by ≈ eps·κ² ≈ 6e-5; X is symmetric positive
    definite, so polar(X) = I exactly and s = (1, 3/4, 1/2, 2^-19)."""
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    d = np.array([2.0**-19, 1.0, 0.75, 0.5])
    x = (h * d) @ h.T / 4
    assert linalg._condition_below(xtx(torch.from_numpy(x)), gram_rtol(torch.float64))
    eigh_tops.clear()
    p, s = polar_and_singular_values(torch.from_numpy(x))
    assert eigh_tops == [None] and len(svd_calls) == 1
    # the SVD route: ≈ 2·eps/(σ_4 + σ_3) ≈ 1e-15 (a square X); 1e-9 is far from 6e-5
    assert np.abs(p.numpy() - np.eye(4)).max() <= 1e-9
    assert np.abs(s.numpy() - [1.0, 0.75, 0.5, 2.0**-19]).max() <= 1e-15


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)], ids=["tall", "wide"])
def test_polar_float32_uses_the_svd(shape, svd_calls):
    x = spectrum_matrix(*shape, np.geomspace(10.0, 1.0, 24), seed=14).astype(np.float32)
    p, s = polar_and_singular_values(torch.from_numpy(x))
    assert p.dtype == torch.float32 and len(svd_calls) == 1
    # fp32 SVD: ≈ n·eps32·κ = 3e-5
    assert rel(p.numpy(), _numpy_polar(x.astype(float))) <= 1e-4


# ---- psd_pinv_right ----


def _b(n, seed=20):
    return np.random.default_rng(seed).standard_normal((5, n))


def test_psd_pinv_right_full_rank_by_cholesky(monkeypatch):
    """SPD, κ = 100: the Cholesky fast path (no eigh) equals B A⁻¹ (numpy solve) to ≈ eps·κ."""
    a = spd(np.geomspace(10.0, 0.1, 8), seed=21)
    monkeypatch.setattr(linalg, "_sym_eigh", lambda *a, **k: pytest.fail("eigh on an SPD A"))
    got, rank = psd_pinv_right(torch.from_numpy(_b(8)), torch.from_numpy(a))
    assert rank == 8
    assert rel(got.numpy(), np.linalg.solve(a, _b(8).T).T) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_psd_pinv_right_rank_deficient_by_eigh(dtype):
    """Rank 3 of 8: the eigen path keeps the 3 pairs above rtol·λ_max, = B A⁺ (numpy pinv with a
    cut in the wide gap between 1e-10 and the kept 0.5). fp32: the Gram's zero eigenvalues come
    out at ≈ eps32·λ_max, so rtol = 1e-4 cuts them; accuracy ≈ eps32·κ_kept = 1e-6."""
    a = spd([2.0, 1.0, 0.5, 0, 0, 0, 0, 0], seed=22)
    b = _b(8)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    got, rank = psd_pinv_right(torch.from_numpy(b), torch.from_numpy(a).to(dtype), rtol)
    assert rank == 3 and got.dtype == dtype
    want = b @ np.linalg.pinv(a, rcond=1e-8, hermitian=True)
    assert rel(got.double().numpy(), want) <= (1e-12 if dtype == torch.float64 else 1e-5)


def test_psd_pinv_right_full_rank_but_below_the_frobenius_shift_by_eigh():
    """λ = (1, 1, 1, 1.5·rtol): λ_min < rtol·‖A‖_F = 2·rtol, so the fast path is refused, yet
    λ_min > rtol·λ_max, so the eigen path keeps all 4: B A⁻¹ (numpy solve), to ≈ eps·κ ≈ 1e-10."""
    rtol = 1e-6
    a = spd([1.0, 1.0, 1.0, 1.5 * rtol], seed=23)
    got, rank = psd_pinv_right(torch.from_numpy(_b(4)), torch.from_numpy(a), rtol)
    assert rank == 4
    assert rel(got.numpy(), np.linalg.solve(a, _b(4).T).T) <= 1e-8


def test_psd_pinv_right_of_zero_is_zero():
    got, rank = psd_pinv_right(torch.from_numpy(_b(3)), torch.zeros(3, 3, dtype=torch.float64))
    assert rank == 0 and torch.equal(got, torch.zeros(5, 3, dtype=torch.float64))


def test_psd_pinv_right_casts_b_to_a_dtype():
    a = torch.eye(3, dtype=torch.float64) * 2
    got, _ = psd_pinv_right(torch.ones(2, 3, dtype=torch.float32), a)
    assert got.dtype == torch.float64
    assert np.abs(got.numpy() - 0.5).max() <= 1e-15  # 1/(√2·√2) by two triangular solves


# ---- spd_solve_right ----


def test_spd_solve_right_without_a_ridge():
    a = spd(np.geomspace(5.0, 0.5, 6), seed=30)
    got, ridge = spd_solve_right(torch.from_numpy(_b(6)), torch.from_numpy(a))
    assert ridge == 0.0
    assert rel(got.numpy(), np.linalg.solve(a, _b(6).T).T) <= 1e-13


@pytest.mark.parametrize("neg, ridge", [(1e-7, 1e-6), (3e-6, 1e-5), (3e-5, 1e-4)])
def test_spd_solve_right_ridge_ladder(neg, ridge):
    """λ = (2, 1, 1, −neg) (so tr(A)/n ≈ 1): Cholesky fails at ridge 0 and at every rung
    λ_r·tr(A)/n below neg (λ_min + shift < 0 by ≥ 1e-7, far above rounding ≈ 1e-15), and succeeds
    at the first rung above it; the result is B (A + ridge·tr(A)/n·I)⁻¹."""
    a = spd([2.0, 1.0, 1.0, -neg], seed=31)
    scale = np.trace(a) / 4
    got, used = spd_solve_right(torch.from_numpy(_b(4)), torch.from_numpy(a))
    assert used == pytest.approx(ridge, rel=1e-9)
    want = np.linalg.solve(a + used * scale * np.eye(4), _b(4).T).T
    # κ(A + ridge) ≤ 2/(ridge − neg) ≈ 3e5..2e6: agreement to ≈ eps·κ ≲ 1e-9
    assert rel(got.numpy(), want) <= 1e-8


@pytest.mark.parametrize("max_ridge", [1e-4, 1e-6])
def test_spd_solve_right_gives_up_beyond_max_ridge(max_ridge):
    """Negative definite A: no ridge up to max_ridge helps; FloatingPointError names the bound.
    (max_ridge = 1e-6: the ladder stops after its first rung.)"""
    a = -torch.eye(3, dtype=torch.float64)
    a[0, 0] = 5.0  # tr > 0, so the relative ridge is a positive shift that is too small
    with pytest.raises(FloatingPointError, match=f"{max_ridge:g}"):
        spd_solve_right(torch.ones(2, 3, dtype=torch.float64), a, max_ridge)
