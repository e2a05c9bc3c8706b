"""The method files' edge branches, each forced by its input and checked against a formula.

Complements tests/test_methods.py (which compares every method with tests/reference_formulas.py
on generic inputs): here the inputs are the degenerate ones a branch exists for (a single task,
a singular system, experts that cancel or coincide, nothing selected, zero task vectors, more
tasks than the rank). Exact-arithmetic inputs (small integers, powers of two) are used where a
branch depends on an exact equality (cos Ω = ±1, unit vectors that cancel).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merges.errors import MergeInputError
from merges.methods.ace import heterogeneity
from merges.methods.ties import elect_and_disjoint_mean
from merges.registry import TensorTask, methods
from tests import reference_formulas as ref

NAME = "model.layers.0.mlp.up_proj.weight"


def merge(method, deltas, params=None, base=None, grams=None):
    """(Δ* as fp64 numpy, task.info) from the registered method on fp32 inputs."""
    m = methods()[method]
    d = torch.as_tensor(np.asarray(deltas), dtype=torch.float32)
    task = TensorTask(NAME, d.clone(), grams)
    if base is not None:
        task.base = torch.as_tensor(np.asarray(base), dtype=torch.float32)
    out = m.fn(task, m.parse_params(params or {}, [f"e{i}" for i in range(d.shape[0])]))
    assert out.shape == d.shape[1:] and out.dtype == torch.float32
    return out.double().numpy(), task.info


def f32(a):
    """fp64 values that fp32 holds exactly (what the methods see)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-300)


# fp32 task vectors, fp64 (or fp32) arithmetic inside the methods, fp32 results: 1e-5 relative,
# as in tests/test_methods.py (≈ 100 × the fp32 rounding of the result).
TOL = 1e-5


# ---- ace ----


def test_ace_heterogeneity_formula_and_single_task():
    assert heterogeneity(torch.tensor([4.0], dtype=torch.float64)) == (0.0, False)
    tau = np.array([1.0, 100.0, 1e4])
    ell = np.log(tau + 1e-12)
    gamma = ell.var(ddof=1) / (ell.mean() ** 2 + 1e-12)  # ≈ 0.44
    got, flag = heterogeneity(torch.tensor(tau, dtype=torch.float64))
    assert got == pytest.approx(gamma, rel=1e-12) and flag == (gamma > 0.3) and flag
    got, flag = heterogeneity(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64))
    assert 0 < got < 0.3 and not flag


def test_ace_single_task_matches_reference():
    """T = 1: γ = 0 (no variance of one value), unflagged: the ridge-regularised core only."""
    d = f32(np.random.default_rng(0).standard_normal((1, 12, 8)) * 0.1)
    got, info = merge("ace", d)
    assert info["flag"] is False and info["gamma"] == 0.0
    assert rel(got, ref.ace(d, None, {})) <= TOL


@pytest.mark.parametrize("shape", [(12, 8), (6, 10)], ids=["tall", "wide"])
def test_ace_singular_system_falls_back_to_the_pseudo_inverse(shape, monkeypatch):
    """ε = 0 and an input column no task changed: Σ̂_t and the broadcast prior vanish in that
    column, so A has an exactly zero column and the LU solve fails; Δ* = B A⁺, the official
    code's pinv fallback (reference: numpy's pinv; A's other singular values are far above
    both libraries' cut, so the choice of cut does not matter)."""
    m, n = shape
    d = np.random.default_rng(1).standard_normal((3, m, n)) * 0.1
    d[:, :, 2] = 0.0
    d = f32(d)
    calls = []
    real = torch.linalg.pinv
    monkeypatch.setattr(torch.linalg, "pinv", lambda a: calls.append(1) or real(a))
    got, info = merge("ace", d, {"eps": 0.0})
    assert calls == [1] and info["flag"] is False
    cen = [x - x.mean(0, keepdims=True) for x in d]
    sig = sum(x.T @ x for x in cen)
    a = sig + np.ones((n, 1)) @ sig.mean(0, keepdims=True)
    b = sum(x @ (x.T @ x) for x in cen)
    assert np.linalg.matrix_rank(a) == n - 1
    assert rel(got, b @ np.linalg.pinv(a)) <= TOL


# ---- karcher ----


def test_karcher_experts_at_zero_give_zero():
    """Every ‖W_t‖ ≤ tol: no direction to average; W* = 0, i.e. Δ* = −W_0."""
    w0 = f32([[0.5, -1.0], [0.25, 2.0]])
    got, _ = merge("karcher", np.stack([-w0, -w0]), base=w0)
    assert np.array_equal(got, -w0)


def test_karcher_parallel_experts_give_their_direction_at_the_mean_norm():
    """W_1 = 1, W_2 = 3 (all entries): u_1 = u_2 = 1/2 exactly, so every θ_t = 0 is skipped and
    no step is taken; W* = ((2 + 6)/2)·u = 2 (the closed form, and the fp64 reference)."""
    w0 = f32([[0.5, -1.0], [0.25, 2.0]])
    d = np.stack([np.ones((2, 2)) - w0, 3 * np.ones((2, 2)) - w0])
    got, info = merge("karcher", d, base=w0)
    assert info["iterations"] == 0
    assert np.abs(got - (2.0 - w0)).max() <= 1e-6
    assert np.abs(got - ref.karcher(d, None, {}, w0)).max() <= 1e-6


# ---- linear ----


def test_linear_normalised_weights_summing_to_zero_are_refused():
    d = f32(np.random.default_rng(2).standard_normal((2, 3, 4)))
    w0 = f32(np.random.default_rng(3).standard_normal((3, 4)))
    with pytest.raises(MergeInputError, match="sum to 0"):
        merge("linear", d, {"weight": [1.0, -1.0]}, base=w0)
    # unnormalised, the same weights are a valid W* = W_1 − W_2: Δ* = Δ_1 − Δ_2 − W_0
    got, _ = merge("linear", d, {"weight": [1.0, -1.0], "normalize": False}, base=w0)
    assert np.abs(got - (d[0] - d[1] - w0)).max() <= 1e-6


# ---- multislerp ----


def test_multislerp_unnormalised_weights_match_reference():
    d = f32(np.random.default_rng(4).standard_normal((3, 6, 5)) * 0.1)
    params = {"weight": [0.2, 0.3, 0.1], "normalize_weights": False}
    got, _ = merge("multislerp", d, params)
    assert rel(got, ref.multislerp(d, None, params)) <= TOL
    normalised, _ = merge("multislerp", d, {"weight": [0.2, 0.3, 0.1]})
    assert rel(got, normalised) > 0.1  # the weights' sum (0.6) scales the norm


def test_multislerp_two_cancelling_experts_fall_back_to_the_linear_merge():
    """Δ_2 = −2Δ_1 with equal weights: u_1 = −u_2 exactly (norms 5 and 10), Σ w_t u_t = 0, no
    mean direction; mergekit's fallback Σ w_t Δ_t = −Δ_1/2."""
    d1 = f32([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    got, _ = merge("multislerp", np.stack([d1, -2 * d1]))
    assert np.abs(got - (-0.5 * d1)).max() <= 1e-6


def test_multislerp_three_cancelling_experts_are_refused():
    d1 = f32([[3.0, 4.0], [0.0, 0.0]])
    with pytest.raises(MergeInputError, match=f"tensor {NAME} cancel out"):
        merge("multislerp", np.stack([d1, -d1, d1]), {"weight": [1.0, 2.0, 1.0]})


# ---- nuslerp ----


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["parallel", "antiparallel"])
def test_nuslerp_colinear_task_vectors_interpolate_linearly(sign):
    """cos Ω = ±1 exactly (norms 5 and 10): sin Ω = 0, so the linear form (1 − t)Δ_1 + tΔ_2,
    t = 3/4."""
    d1 = f32([[3.0, 0.0], [4.0, 0.0]])
    d2 = 2 * sign * d1
    got, _ = merge("nuslerp", np.stack([d1, d2]), {"weight": [1.0, 3.0]})
    assert np.all(np.isfinite(got))
    assert np.abs(got - (0.25 * d1 + 0.75 * d2)).max() <= 1e-6


def test_nuslerp_row_wise_interpolates_each_column():
    d = f32(np.random.default_rng(5).standard_normal((2, 5, 4)))
    d[1, :, 1] = -3 * d[0, :, 1]  # one colinear column: its linear form, not 0/0
    params = {"weight": [1.0, 3.0], "flatten": False, "row_wise": True}
    got, _ = merge("nuslerp", d, params)
    assert rel(got, ref.nuslerp(d, None, params)) <= TOL
    assert np.abs(got[:, 1] - (0.25 * d[0, :, 1] + 0.75 * d[1, :, 1])).max() <= 1e-6
    by_rows, _ = merge("nuslerp", d, {**params, "row_wise": False})
    assert rel(got, by_rows) > 0.01


def test_nuslerp_weights_summing_to_zero_take_the_midpoint():
    d = f32(np.random.default_rng(6).standard_normal((2, 4, 3)))
    got, _ = merge("nuslerp", d, {"weight": [1.0, -1.0]})
    want = ref._slerp(d[0], d[1], 0.5, lambda c: False)
    assert rel(got, want) <= TOL


# ---- regmean ----


def test_regmean_without_grams_is_refused():
    d = np.zeros((2, 3, 4))
    with pytest.raises(MergeInputError, match=f"needs an input Gram for {NAME}"):
        merge("regmean", d)


# ---- sce ----


@pytest.mark.parametrize("variant", ["official", "mergekit"])
def test_sce_selecting_no_entry(variant):
    """int(6 · 0.1) = 0 entries selected: every weight is 0, so they fall back to uniform;
    official merges every entry with them (the reference), mergekit keeps W_0 everywhere."""
    d = f32(np.random.default_rng(7).standard_normal((3, 2, 3)))
    params = {"select_topk": 0.1, "variant": variant}
    got, info = merge("sce", d, params)
    assert info["weights"] == [round(1 / 3, 6)] * 3
    assert rel(got, ref.sce(d, None, params)) <= TOL
    if variant == "mergekit":
        assert np.all(got == 0)
    else:
        assert np.abs(got).max() > 0.1


# ---- ties ----


@pytest.mark.parametrize("weight", [1.0, [1.0, 0.5, 2.0]], ids=["plain", "weighted"])
def test_ties_unnormalised_is_the_sum_of_agreeing_entries(weight):
    d = f32(np.random.default_rng(8).standard_normal((3, 6, 5)))
    params = {"density": 0.5, "weight": weight, "normalize": False}
    got, _ = merge("ties", d, params)
    assert rel(got, ref.ties(d, None, params)) <= TOL
    normalised, _ = merge("ties", d, {**params, "normalize": True})
    assert rel(got, normalised) > 0.1


@pytest.mark.parametrize("shape", [(3, 0), (3, 0, 4)])
def test_elect_and_disjoint_mean_of_an_empty_tensor(shape):
    out = elect_and_disjoint_mean(torch.zeros(shape))
    assert out.shape == shape[1:]


# ---- tsv ----


def test_tsv_zero_task_vectors_give_zero():
    """Numerical rank 0 for every task: no triplets at all, Δ* = 0 (no polar of nothing)."""
    got, _ = merge("tsv", np.zeros((3, 6, 4)))
    assert np.array_equal(got, np.zeros((6, 4)))


def test_tsv_more_tasks_than_rank_keeps_nothing():
    """k = ⌊r/T⌋ = ⌊4/5⌋ = 0 triplets per task: Δ* = 0, as the reference's empty factors give
    (this raised a scipy ValueError: the eigensolver was asked for the top 0 pairs)."""
    d = f32(np.random.default_rng(9).standard_normal((5, 6, 4)))
    got, _ = merge("tsv", d)
    assert np.array_equal(got, np.zeros((6, 4)))
    assert np.abs(ref.tsv(d, None, {})).max() == 0


# ---- iso_cts ----


def test_iso_cts_without_a_common_subspace_matches_reference():
    """r = 4, T = 2, f = 0.1: k_ts = round(4/2)·2 = 4, so k_c = 0 (no common directions) and each
    task gives its top 2 (this raised a scipy ValueError: top 0 pairs asked of the eigensolver)."""
    d = f32(np.random.default_rng(10).standard_normal((2, 7, 4)))
    params = {"common_fraction": 0.1}
    got, info = merge("iso_cts", d, params)
    assert info == {"k_common": 0, "k_per_task": 2}
    assert rel(got, ref.iso_cts(d, None, params)) <= TOL


# ---- wudi ----


def test_wudi_zero_task_vector_is_left_out_of_the_objective():
    """‖Δ_3‖ = 0: its term (τ − Δ_3)Δ_3ᵀ/‖Δ_3‖² is 0/0, left out; τ_0 = Σ Δ_t is unchanged, so
    the result is the two-task optimisation (the fp64 reference on Δ_1, Δ_2)."""
    d = f32(np.random.default_rng(11).standard_normal((2, 6, 5)) * 0.1)
    params = {"iterations": 50, "lr": 3e-3}
    got, info = merge("wudi", np.concatenate([d, np.zeros((1, 6, 5))]), params)
    assert rel(got, ref.wudi(d, None, params)) <= TOL
    assert info["objective_end"] < info["objective_start"]
