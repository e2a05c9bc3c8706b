"""The authors' recipes (fp32 `torch.linalg.pinv`) for ACTMat and RegMean against independent numpy
formulas, and the project's defaults (fp64 eigh / fp64 Cholesky, α = 0.9) shown to be different
recipes on inputs whose spectrum spans several orders of magnitude.

The references are numpy, written here: float32 throughout with `np.linalg.pinv` at torch's
default cut (singular values ≤ max(m, n)·ε_fp32·σ_max of the square matrix are dropped), or fp64
solves. The spectra leave a gap around that cut (kept eigenvalues ≥ ~1e-2·λ_max, dropped ones
≲ 1e-7·λ_max against a cut of ~1e-6·λ_max), so two fp32 implementations agree on what is dropped
(to a few 1e-6), while the fp64 recipes keep those directions and differ by 10% or more.
"""

import numpy as np
import pytest
import torch

from merges.registry import TensorTask, methods

EPS32 = np.finfo(np.float32).eps
KEPT = np.array([1.0, 0.5, 0.2, 0.1])  # singular values (relative) that fp32 pinv keeps
DROPPED = np.array([2e-4, 1.5e-4, 1e-4, 5e-5])  # ... and that it cuts (fp64 keeps them)


def run(name, deltas, grams=None, **params):
    m = methods()[name]
    d = torch.as_tensor(deltas, dtype=torch.float32)
    g = [torch.as_tensor(x, dtype=torch.float32) for x in grams] if grams is not None else None
    task = TensorTask("model.layers.0.mlp.up_proj.weight", d, g)
    out = m.fn(task, m.parse_params(params))
    assert out.dtype == torch.float32 and out.shape == d.shape[1:]
    return out.numpy().astype(np.float64)


def np_pinv32(a):
    """numpy float32 pinv with torch.linalg.pinv's default tolerance: rtol = max(m, n)·ε_fp32."""
    a = np.asarray(a, np.float32)
    return np.linalg.pinv(a, rcond=max(a.shape) * EPS32).astype(np.float32)


def orthonormal(rng, rows, cols):
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q[:, :cols]


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def wide_spectrum_deltas(seed, m, n, t=3):
    """Δ_t = U_t diag(s_t) Vᵀ with one right basis V, so Σ_t C_t ≈ V diag(Σ_t s_t²) Vᵀ: four
    directions far above torch's fp32 cut and four far below it (but above fp64_eigh's 1e-10)."""
    rng = np.random.default_rng(seed)
    r = min(m, n)
    v = orthonormal(rng, n, r)
    base = np.concatenate([KEPT, DROPPED])[:r]
    out = []
    for _ in range(t):
        s = base * rng.uniform(0.7, 1.3, r)
        out.append(orthonormal(rng, m, r) @ np.diag(s) @ v.T)
    return np.stack(out).astype(np.float32), v


@pytest.mark.parametrize("shape", [(12, 8), (8, 12)])
def test_actmat_fp32_pinv_is_the_authors_formula(shape):
    d32, v = wide_spectrum_deltas(1, *shape)
    # the authors' merge_actmat, in numpy float32: c = dᵀd; (d @ c).sum(0) @ pinv(c.sum(0))
    c = np.einsum("tij,tik->tjk", d32, d32).astype(np.float32)
    want = (d32 @ c).sum(0, dtype=np.float32) @ np_pinv32(c.sum(0, dtype=np.float32))
    got = run("actmat", d32, solver="fp32_pinv")
    assert rel(got, want.astype(np.float64)) <= 5e-5
    # the cut is real: the four small directions of Σ C_t are gone from the fp32 result ...
    small = v[:, len(KEPT) :]
    assert np.linalg.norm(got @ small) <= 1e-5 * np.linalg.norm(got)
    # ... while the project's default keeps them, so the two recipes differ
    d = d32.astype(np.float64)
    exact = sum(x @ x.T @ x for x in d) @ np.linalg.pinv(sum(x.T @ x for x in d), rcond=1e-12)
    fp64 = run("actmat", d32)
    assert rel(fp64, exact) <= 1e-5  # the fp64 recipe is the exact solution
    assert np.linalg.norm(fp64 @ small) >= 1e-4 * np.linalg.norm(fp64)
    assert rel(fp64, want.astype(np.float64)) >= 1e-4


def test_actmat_default_is_still_fp64_eigh():
    p = methods()["actmat"].parse_params({})
    assert p.solver == "fp64_eigh" and p.rtol == 1e-10


def wide_spectrum_grams(seed, n, t=3):
    """G_t = V diag(g_t) Vᵀ (one basis), eigenvalues 1 … 1e-2 and 4e-8 … 2.5e-9 (relative)."""
    rng = np.random.default_rng(seed)
    v = orthonormal(rng, n, n)
    base = np.concatenate([KEPT, DROPPED]) ** 2
    return [
        (v @ np.diag(base * rng.uniform(0.7, 1.3, n)) @ v.T).astype(np.float32) for _ in range(t)
    ], v


def test_regmean_fp32_pinv_alpha1_is_the_authors_formula():
    rng = np.random.default_rng(2)
    d32 = (rng.standard_normal((3, 12, 8)) * 0.1).astype(np.float32)
    grams, v = wide_spectrum_grams(3, 8)
    g32 = np.stack(grams)
    # the authors' merge_regmean: (d @ c).sum(0) @ pinv(c.sum(0)), c the Grams as they are (α = 1)
    want = (d32 @ g32).sum(0, dtype=np.float32) @ np_pinv32(g32.sum(0, dtype=np.float32))
    got = run("regmean", d32, grams, solver="fp32_pinv", alpha=1.0)
    assert rel(got, want.astype(np.float64)) <= 5e-5
    small = v[:, len(KEPT) :]
    assert np.linalg.norm(got @ small) <= 1e-5 * np.linalg.norm(got)
    # the project's fp64 Cholesky (α = 1) solves the full system: a different result
    d, g = d32.astype(np.float64), [x.astype(np.float64) for x in grams]
    exact = np.linalg.solve(sum(g).T, sum(x @ y for x, y in zip(d, g, strict=True)).T).T
    chol = run("regmean", d32, grams, alpha=1.0)
    assert rel(chol, exact) <= 1e-5
    assert rel(chol, want.astype(np.float64)) >= 0.1


def test_regmean_fp32_pinv_with_alpha_reduces_off_diagonals_in_fp32():
    rng = np.random.default_rng(4)
    d32 = (rng.standard_normal((3, 6, 10)) * 0.1).astype(np.float32)
    grams = []
    for _ in range(3):
        x = rng.standard_normal((30, 10))
        grams.append((x.T @ x / 30).astype(np.float32))
    a = np.float32(0.5)
    gt = [a * x + (np.float32(1) - a) * np.diag(np.diag(x)) for x in grams]
    want = sum(x @ y for x, y in zip(d32, gt, strict=True)) @ np_pinv32(sum(gt))
    got = run("regmean", d32, grams, solver="fp32_pinv", alpha=0.5)
    assert rel(got, want.astype(np.float64)) <= 1e-5


def test_regmean_default_is_unchanged_alpha_09_fp64_cholesky():
    rng = np.random.default_rng(5)
    d32 = (rng.standard_normal((3, 12, 8)) * 0.1).astype(np.float32)
    grams = []
    for _ in range(3):
        x = rng.standard_normal((24, 8))
        grams.append((x.T @ x / 24).astype(np.float32))
    p = methods()["regmean"].parse_params({})
    assert p.alpha == 0.9 and p.solver == "fp64_cholesky"
    d, g = d32.astype(np.float64), [x.astype(np.float64) for x in grams]
    gt = [0.9 * x + 0.1 * np.diag(np.diag(x)) for x in g]
    want = np.linalg.solve(sum(gt).T, sum(x @ y for x, y in zip(d, gt, strict=True)).T).T
    got = run("regmean", d32, grams)
    assert rel(got, want) <= 1e-6
    assert np.array_equal(got, run("regmean", d32, grams, alpha=0.9, solver="fp64_cholesky"))
