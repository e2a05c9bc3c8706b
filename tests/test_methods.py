"""Every registered method: independent fp64 references, the spec's invariants (§5), closed forms.

Tests iterate the registry, so a new method is exercised without editing this file; the
reference test fails until `reference_formulas.REFERENCES` has an entry for it.
"""

import inspect

import numpy as np
import pytest
import torch

from merges.registry import TensorTask, methods
from tests import reference_formulas as ref

METHODS = sorted(methods())
# Non-default parameters also checked against the reference (where a method has any).
VARIANTS = {
    "task_arithmetic": {"scale": 0.7, "weight": [0.5, 1.0, 2.0], "normalize": True},
    "ties": {"density": [0.5, 0.3, 0.7], "scale": 1.3, "weight": [1.0, 0.5, 2.0]},
    "linear": {"weight": [0.2, 0.3, 1.5], "normalize": False},
    "dare_linear": {"density": [0.3, 0.6, 0.9], "weight": [0.5, 1.0, 0.2], "rescale": "l1"},
    "dare_ties": {"density": 0.4, "normalize": True, "seed": 3, "scale": 0.8},
    "breadcrumbs": {"density": [0.5, 0.6, 0.7], "gamma": 0.1, "variant": "mergekit"},
    "breadcrumbs_ties": {"density": 0.6, "gamma": [0.1, 0.05, 0.2], "rescale": "l1"},
    "della": {"density": [0.4, 0.5, 0.6], "epsilon": 0.2, "rescale": "l1", "weight": [1, 2, 3]},
    "della_linear": {"density": 0.5, "normalize": True, "seed": 9},
    "sce": {"select_topk": 0.3, "variant": "mergekit"},
    "ram": {"epsilon": 0.05},
    "ramplus_tl": {"epsilon": 0.05, "r": 0.5, "alpha": 0.7},
    "nearswap": {"t": 0.05},
    "model_stock": {"filter_wise": True},
    "slerp": {"t": 0.3},
    "nuslerp": {"weight": [1.0, 3.0], "flatten": False},
    "multislerp": {"weight": [0.5, 1.0, 2.0]},
    "karcher": {"max_iter": 50, "tol": 1e-9},
    "cart": {"rank_fraction": 0.5, "scale": 0.7},
    "wudi": {"iterations": 200, "lr": 3e-3, "scale": 0.5},
    "dare": {"drop_rate": 0.3, "combine": "ties", "seed": 7},
    "regmean": {"alpha": 0.5},
    "actmat": {"rtol": 1e-8},
    "tsv": {"scale": 0.5},
    "iso_c": {"scale": 1.5},
    "iso_cts": {"common_fraction": 0.5, "scale": 2.0},
    "ace": {"eps_mode": "relative", "k_frac": 0.5},
}


def base_for(deltas, seed=0):
    """A W_0 for base-reading methods: N(0, 0.5²) entries, float32-representable."""
    rng = np.random.default_rng(1000 + seed)
    w0 = rng.standard_normal(np.asarray(deltas).shape[1:]) * 0.5
    return w0.astype(np.float32).astype(np.float64)


def n_case(name, t=3):
    """An expert count the method accepts (slerp/nearswap take one, nuslerp two)."""
    lo, hi = methods()[name].n_experts
    return min(max(t, lo), hi or t)


def run(name, deltas, grams=None, params=None, tensor="model.layers.0.mlp.up_proj.weight"):
    m = methods()[name]
    d = torch.as_tensor(np.asarray(deltas), dtype=torch.float32)
    p = m.parse_params(params or {}, [f"e{i}" for i in range(d.shape[0])])
    g = [torch.as_tensor(x, dtype=torch.float32) for x in grams] if grams is not None else None
    task = TensorTask(tensor, d, g)
    if m.needs_base:
        task.base = torch.as_tensor(base_for(deltas), dtype=torch.float32)
    out = m.fn(task, p)
    assert out.dtype == torch.float32 and out.shape == d.shape[1:]
    return out.numpy().astype(np.float64), task.info


def make_case(seed, t=3, m=12, n=8, spread=0.0):
    """Deltas as float32-representable fp64 arrays; task t scaled by 10^(spread·t)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((t, m, n)) * 0.1
    d *= (10.0 ** (spread * np.arange(t)))[:, None, None]
    d = d.astype(np.float32).astype(np.float64)
    grams = []
    for _ in range(t):
        x = rng.standard_normal((3 * n, n))
        grams.append(((x.T @ x) / (3 * n)).astype(np.float32).astype(np.float64))
    return d, grams


def rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def reference(name, d, grams, params, tensor="model.layers.0.mlp.up_proj.weight"):
    fn = ref.REFERENCES[name]
    takes = inspect.signature(fn).parameters
    extra = {"name": tensor} if "name" in takes else {}
    if "w0" in takes:
        extra["w0"] = base_for(d)
    return fn(d, grams, params, **extra)


def test_every_method_has_a_reference_formula():
    missing = sorted(set(METHODS) - set(ref.REFERENCES))
    assert not missing, (
        f"add an independent fp64 formula to tests/reference_formulas.py for: {missing}"
    )


@pytest.mark.parametrize("shape", [(12, 8), (6, 10)])
@pytest.mark.parametrize("variant", ["default", "variant"])
@pytest.mark.parametrize("name", METHODS)
def test_matches_fp64_reference(name, variant, shape):
    if variant == "variant" and name not in VARIANTS:
        pytest.skip(f"{name} has no parameters to vary")
    params = VARIANTS[name] if variant == "variant" else {}
    d, grams = make_case(1, t=n_case(name), m=shape[0], n=shape[1])
    got, _ = run(name, d, grams if methods()[name].needs_stats else None, params)
    want = reference(name, d, grams, params)
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("spread,flag", [(0.0, False), (2.0, True)])
def test_ace_matches_reference_on_both_branches(spread, flag):
    d, _ = make_case(3, spread=spread)
    if not flag:
        d = d * 0.01  # τ_t ≈ 1e-2 each: log-norms nearly equal, γ small
    got, info = run("ace", d)
    assert info["flag"] is flag
    assert rel_err(got, ref.ace(d, None, {})) <= 1e-5


@pytest.mark.parametrize("name", METHODS)
def test_deterministic_and_finite(name):
    d, grams = make_case(5, t=n_case(name))
    g = grams if methods()[name].needs_stats else None
    a, _ = run(name, d, g)
    b, _ = run(name, d, g)
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)


# Random masks are seeded per expert position; slerp and nearswap take one expert.
SEEDED = [m for m in METHODS if "seed" in methods()[m].params.model_fields]


@pytest.mark.parametrize("name", [m for m in METHODS if m not in SEEDED and n_case(m) > 1])
def test_permutation_invariant(name):
    d, grams = make_case(7, t=n_case(name))
    g = grams if methods()[name].needs_stats else None
    perm = [2, 0, 1] if d.shape[0] == 3 else [1, 0]
    a, _ = run(name, d, g)
    b, _ = run(name, d[perm], [g[i] for i in perm] if g else None)
    assert rel_err(b, a) <= 1e-5


# §5.1: T = 1 returns Δ_1 (with the parameters that make each method the identity).
T1_IDENTITY = {
    "average": {},
    "task_arithmetic": {"scale": 1.0},
    "ties": {"density": 1.0},
    "dare": {"drop_rate": 0.0, "scale": 1.0},
    "regmean": {},
    "actmat": {},
    "tsv": {},
    "linear": {},
    "dare_linear": {"density": 1.0},
    "dare_ties": {"density": 1.0},
    "breadcrumbs": {"density": 1.0},
    "breadcrumbs_ties": {"density": 1.0},
    "della": {"density": 1.0},
    "della_linear": {"density": 1.0},
    "sce": {},
    "ram": {"epsilon": 0.0},
    "ramplus_tl": {"epsilon": 0.0},
    "multislerp": {},
    "karcher": {},
    "slerp": {"t": 1.0},
    "nearswap": {"t": 1e6},
    "cart": {"rank_fraction": 1.0, "scale": 1.0},
}


@pytest.mark.parametrize("name", sorted(T1_IDENTITY))
def test_single_task_returns_its_delta(name):
    d, grams = make_case(11, t=1)
    got, _ = run(name, d, grams if methods()[name].needs_stats else None, T1_IDENTITY[name])
    assert rel_err(got, d[0]) <= 1e-5


def test_iso_c_single_task_is_isotropic_polar():
    d, _ = make_case(12, t=1)
    got, _ = run("iso_c", d)
    s = np.linalg.svd(d[0], compute_uv=False)
    assert np.allclose(np.linalg.svd(got, compute_uv=False), s.mean(), rtol=1e-5)
    assert rel_err(got, s.mean() * ref.polar_isqrt(d[0])) <= 1e-5


def test_ties_hand_case():
    got, _ = run("ties", [[[2.0, 1.0]], [[-3.0, 4.0]]], params={"density": 1.0})
    assert np.allclose(got, [[-3.0, 2.5]])


def test_actmat_equal_deltas_give_the_delta():
    d, _ = make_case(13, t=1)
    got, _ = run("actmat", np.repeat(d, 3, axis=0))
    assert rel_err(got, d[0]) <= 1e-5


def _orthogonal_blocks(seed, t, m, n, rank):
    """Task vectors with mutually orthogonal left and right singular spaces, each of rank `rank`."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, t * rank)))
    v, _ = np.linalg.qr(rng.standard_normal((n, t * rank)))
    return np.stack(
        [
            u[:, i * rank : (i + 1) * rank]
            @ np.diag(rng.uniform(0.5, 2, rank))
            @ v[:, i * rank : (i + 1) * rank].T
            for i in range(t)
        ]
    )


def test_actmat_orthogonal_inputs_give_the_sum():
    d = _orthogonal_blocks(14, 3, 12, 9, 2)
    got, _ = run("actmat", d)
    assert rel_err(got, d.sum(0)) <= 1e-5


def test_tsv_orthogonal_low_rank_gives_the_sum():
    d = _orthogonal_blocks(15, 3, 12, 9, 2)  # rank 2 ≤ k = ⌊9/3⌋
    got, _ = run("tsv", d)
    assert rel_err(got, d.sum(0)) <= 1e-5


def test_regmean_identity_grams_give_the_mean():
    d, _ = make_case(16)
    eye = [np.eye(8)] * 3
    got, _ = run("regmean", d, eye)
    assert rel_err(got, d.mean(0)) <= 1e-6


def test_regmean_alpha_zero_is_columnwise_weighted_mean():
    d, grams = make_case(17)
    got, _ = run("regmean", d, grams, {"alpha": 0.0})
    w = np.stack([np.diag(g) for g in grams])  # [T, n]
    want = (d * w[:, None, :]).sum(0) / w.sum(0)
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("name", ["actmat", "regmean"])
def test_rank_deficient_solve_keeps_base_outside_the_span(name):
    """§3.1/§5.7: LoRA-like deltas; Δ* must vanish on inputs orthogonal to every Δ_t's rows."""
    rng = np.random.default_rng(18)
    n = 10
    a = [rng.standard_normal((2, n)) for _ in range(3)]  # row spaces of rank 2 each: span ≤ 6 < n
    d = np.stack([rng.standard_normal((8, 2)) @ x for x in a]) * 0.1
    grams = [x.T @ x for x in a]  # Grams supported on the same span (rank-deficient)
    got, _ = run(
        name, d, grams if name == "regmean" else None, {"alpha": 1.0} if name == "regmean" else None
    )
    null = np.linalg.svd(np.concatenate(a), full_matrices=True)[2][6:].T  # basis of the complement
    if name == "actmat":
        assert np.abs(got @ null).max() <= 1e-6 * np.abs(got).max()
        # and on the span it equals the weight-form / invertible solution restricted there
        assert rel_err(got, ref.actmat(d, None, {})) <= 1e-5
    else:
        assert np.isfinite(got).all()  # the relative ridge keeps the solve defined


def test_weight_form_equals_task_vector_form_when_invertible():
    """§5.7: (Σ W_t C_t)(Σ C_t)⁻¹ − W_0 equals the task-vector form for invertible Σ C_t."""
    d, _ = make_case(19)
    rng = np.random.default_rng(19)
    w0 = rng.standard_normal(d.shape[1:])
    w = w0 + d
    c = [x.T @ x for x in d]
    weight_form = (
        np.linalg.solve(sum(c).T, sum(wt @ ct for wt, ct in zip(w, c, strict=True)).T).T - w0
    )
    got, _ = run("actmat", d)
    assert rel_err(got, weight_form) <= 1e-5


def test_dare_mask_fixed_per_seed_and_name():
    d, _ = make_case(20)
    a, _ = run("dare", d, params={"seed": 3})
    b, _ = run("dare", d, params={"seed": 3})
    c, _ = run("dare", d, params={"seed": 4})
    e, _ = run("dare", d, params={"seed": 3}, tensor="model.layers.1.mlp.up_proj.weight")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, e)


def test_dare_is_unbiased():
    """E[τ̃] = τ: the mean over many seeds approaches the undropped sum."""
    d, _ = make_case(21, t=1)
    runs = [
        run("dare", d, params={"seed": s, "drop_rate": 0.5, "scale": 1.0})[0] for s in range(400)
    ]
    mean = np.mean(runs, axis=0)
    # per-entry std of one draw is |τ|; of the mean |τ|/20, so 5 sigma ~ |τ|/4
    assert np.all(np.abs(mean - d[0]) <= 0.25 * np.abs(d[0]) + 1e-9)


@pytest.mark.parametrize("name", [m for m in METHODS if not methods()[m].matrix_only])
def test_elementwise_methods_accept_vectors(name):
    d = np.random.default_rng(22).standard_normal((n_case(name), 17))
    got, _ = run(name, d)
    assert got.shape == (17,) and np.isfinite(got).all()


def test_unknown_parameter_lists_valid_ones():
    from merges.errors import MergeInputError

    with pytest.raises(MergeInputError, match=r"no parameter 'lambda'.*scale"):
        methods()["task_arithmetic"].parse_params({"lambda": "0.3"})
    with pytest.raises(MergeInputError, match="solver"):
        methods()["actmat"].parse_params({"solver": "magic"})


def _low_rank_plus_noise(seed, m, n, rank=5, noise=1e-3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(n)
    return x + noise * rng.standard_normal((m, n))


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
def test_gram_route_matches_plain_fp64_svd(shape):
    """merges.linalg's Gram-eigh triplets and polar factor against numpy's fp64 SVD."""
    from merges.linalg import polar_and_singular_values, top_svd

    x = _low_rank_plus_noise(23, *shape)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    xt = torch.as_tensor(x)
    pol, sv = polar_and_singular_values(xt)
    assert rel_err(sv.numpy(), s) <= 1e-12
    assert rel_err(pol.numpy(), u @ vt) <= 1e-8
    # top 8 triplets (the 5 signal ones and 3 of noise): the product is basis-independent
    tu, ts, tv = top_svd(xt, 8)
    assert rel_err(ts.numpy(), s[:8]) <= 1e-12
    assert rel_err(((tu * ts) @ tv.T).numpy(), (u[:, :8] * s[:8]) @ vt[:8]) <= 1e-8
    # a numerical-rank cut at eps = 1e-4 (tol ≈ 0.03; noise s ≈ 0.01) keeps the signal only
    cu, cs, cv = top_svd(xt, 8, rank_eps=1e-4)
    assert cs.numel() == 5
    assert rel_err(((cu * cs) @ cv.T).numpy(), (u[:, :5] * s[:5]) @ vt[:5]) <= 1e-8


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
def test_ill_conditioned_input_falls_back_to_the_svd(shape):
    """Below gram_rtol·s_1 (here rank 5 plus noise 1e-9) the Gram route is not used."""
    from merges.linalg import polar_and_singular_values, top_svd

    x = _low_rank_plus_noise(24, *shape, noise=1e-9)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    pol, sv = polar_and_singular_values(torch.as_tensor(x))
    assert rel_err(sv.numpy(), s) <= 1e-12
    assert rel_err(pol.numpy(), u @ vt) <= 1e-6
    tu, ts, tv = top_svd(torch.as_tensor(x), 10)
    assert rel_err(((tu * ts) @ tv.T).numpy(), (u[:, :10] * s[:10]) @ vt[:10]) <= 1e-12


@pytest.mark.parametrize("shape", [(70, 48), (48, 70)])
def test_partial_eigh_top_triplets_match_plain_fp64_svd(shape):
    """k ≤ r/6 asks the eigensolver for the top k pairs only; same triplets as numpy's SVD."""
    from merges.linalg import PARTIAL_EIGH_MAX_FRACTION, top_svd

    x = np.random.default_rng(26).standard_normal(shape)
    k = int(PARTIAL_EIGH_MAX_FRACTION * min(shape))
    assert k >= 2
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    tu, ts, tv = top_svd(torch.as_tensor(x), k)
    assert tu.shape == (shape[0], k) and tv.shape == (shape[1], k)
    assert rel_err(ts.numpy(), s[:k]) <= 1e-12
    assert rel_err(((tu * ts) @ tv.T).numpy(), (u[:, :k] * s[:k]) @ vt[:k]) <= 1e-10
    # a rank cut inside the subset: 2 strong directions plus noise, eps = 1e-4
    y = _low_rank_plus_noise(27, *shape, rank=2, noise=1e-9)
    cu, cs, cv = top_svd(torch.as_tensor(y), k, rank_eps=1e-4)
    assert cs.numel() == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grams_by_syrk_match_numpy(dtype):
    """xtx/xxt (BLAS syrk on CPU fp64, both triangles mirrored; torch elsewhere) against numpy."""
    from merges.linalg import xtx, xxt

    x = np.random.default_rng(29).standard_normal((9, 5))
    t = torch.as_tensor(x, dtype=dtype)
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    assert rel_err(xtx(t).double().numpy(), x.T @ x) <= tol
    assert rel_err(xxt(t).double().numpy(), x @ x.T) <= tol
    assert rel_err(xtx(t.T).double().numpy(), x @ x.T) <= tol  # a transposed view: torch's matmul
    if dtype == torch.float64:  # mirrored, so exactly symmetric
        assert torch.equal(xtx(t), xtx(t).T) and torch.equal(xxt(t), xxt(t).T)


@pytest.mark.parametrize("kappa, expected", [(1e2, True), (1e4, True), (1e5, False), (1e8, False)])
def test_condition_pre_test_against_known_spectra(kappa, expected):
    """The Cholesky pre-test says σ_min > gram_rtol·σ_1 (≈ κ < 2.1e4 in fp64) for known spectra."""
    from merges.linalg import _condition_below, gram_rtol

    rng = np.random.default_rng(28)
    q1, _ = np.linalg.qr(rng.standard_normal((60, 40)))
    q2, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    x = (q1 * np.geomspace(1.0, 1.0 / kappa, 40)) @ q2.T
    g = torch.as_tensor(x.T @ x)
    assert _condition_below(g, gram_rtol(torch.float64)) is expected


@pytest.mark.parametrize("rank", [6, 24])
def test_psd_pinv_right_matches_eigh_pinv(rank):
    """Full rank (Cholesky path) and rank-deficient (eigh cut) against numpy's pinv."""
    from merges.linalg import psd_pinv_right

    rng = np.random.default_rng(25)
    f = rng.standard_normal((rank, 24))
    a = f.T @ f
    b = rng.standard_normal((7, 24)) @ a  # in the row space, so B A⁺ is well defined
    got, kept = psd_pinv_right(torch.as_tensor(b), torch.as_tensor(a))
    assert kept == rank
    assert rel_err(got.numpy(), b @ np.linalg.pinv(a, rcond=1e-10, hermitian=True)) <= 1e-8


@pytest.mark.parametrize("shape", [(12, 8), (6, 10)])
def test_ace_flagged_branch_both_orientations(shape):
    d, _ = make_case(3, m=shape[0], n=shape[1], spread=2.0)
    got, info = run("ace", d)
    assert info["flag"] is True
    assert rel_err(got, ref.ace(d, None, {})) <= 1e-5


@pytest.mark.parametrize("kind", ["randn", "ties", "sparse"])
def test_ties_threshold_by_histogram_equals_kthvalue(kind):
    """The TIES trim finds kthvalue(|τ|, k) through a histogram of the float bits; it must be
    the exact k-th smallest |τ| (numpy's partition as the independent reference)."""
    import numpy as np

    from merges.methods.ties import kth_smallest_abs

    g = torch.Generator().manual_seed(3)
    for n in (1, 5, 4097, 300_000):
        x = torch.randn(n, generator=g)
        if kind == "ties":
            x = torch.round(x * 4) / 4
        if kind == "sparse":
            x = x * (torch.rand(n, generator=g) < 0.05)
        for k in sorted({1, n, (n + 1) // 2, max(1, n - int(n * 0.2))}):
            want = np.partition(np.abs(x.numpy()), k - 1)[k - 1]
            assert float(kth_smallest_abs(x, k)) == float(want), (n, k)


def test_dare_linear_is_dare_with_the_same_masks():
    """density = 1 − p and the 1/(1 − p) rescale: the mergekit-named form equals today's `dare`."""
    d, _ = make_case(31)
    a, _ = run("dare_linear", d, None, {"density": 0.7, "scale": 0.4, "seed": 5})
    b, _ = run("dare", d, None, {"drop_rate": 0.3, "scale": 0.4, "seed": 5})
    assert rel_err(a, b) <= 1e-6


def test_ties_variants_agree_without_ties_at_the_threshold():
    """Distinct magnitudes and no zero sign sums: the rules coincide once mergekit keeps the one
    entry more that the authors' threshold (the (n − int(nK))-th smallest |τ|, kept) lets through."""
    d, _ = make_case(32)
    n = d[0].size
    a, _ = run("ties", d, None, {"density": 0.3})
    b, _ = run("ties", d, None, {"density": 0.3, "variant": "mergekit"})
    c, _ = run("ties", d, None, {"density": (int(n * 0.3) + 1) / n + 1e-9, "variant": "mergekit"})
    assert rel_err(a, c) <= 1e-6 and rel_err(a, b) > 1e-3


def test_ties_variants_differ_on_tied_magnitudes():
    """Equal |τ| at the k-th value (as in bf16-derived deltas): the authors' code keeps them all."""
    d = np.array([[[0.5, -0.5, 0.5, 0.25]], [[0.5, 0.5, -0.5, 0.125]]])
    a, _ = run("ties", d, None, {"density": 0.25})
    b, _ = run("ties", d, None, {"density": 0.25, "variant": "mergekit"})
    assert np.count_nonzero(a) > np.count_nonzero(b)


def test_per_expert_parameters_by_name_list_or_number():
    m = methods()["ties"]
    names = ["math", "code", "if"]
    by_name = m.parse_params({"density": {"code": 0.3, "math": 0.1, "if": 0.5}}, names)
    assert by_name.density == [0.1, 0.3, 0.5] and by_name.weight == [1.0, 1.0, 1.0]
    assert m.parse_params({"density": [0.1, 0.3, 0.5]}, names).density == [0.1, 0.3, 0.5]
    assert m.parse_params({"density": "0.4"}, names).density == [0.4] * 3


@pytest.mark.parametrize(
    "params, message",
    [
        ({"density": {"math": 0.1, "code": 0.2}}, "lacks expert 'if'"),
        ({"density": {"math": 0.1, "code": 0.2, "if": 0.3, "x": 1}}, "names no expert 'x'"),
        ({"density": [0.1, 0.2]}, "2 values for 3 expert(s)"),
        ({"density": [0.1, 0.2, 1.5]}, "less than or equal to 1"),
        ({"scale": [1.0, 2.0, 3.0]}, "one value for all experts"),
    ],
)
def test_per_expert_parameter_errors_name_the_problem(params, message):
    from merges.errors import MergeInputError

    with pytest.raises(MergeInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        methods()["ties"].parse_params(params, ["math", "code", "if"])


@pytest.mark.parametrize("name, n", [("slerp", 2), ("nuslerp", 3), ("model_stock", 1)])
def test_expert_count_is_checked(name, n):
    from merges.errors import MergeInputError

    with pytest.raises(MergeInputError, match=f"method '{name}' merges"):
        methods()[name].check_expert_count(n)


def test_wudi_moves_toward_the_closed_form_minimiser():
    """The objective is quadratic: its minimiser solves τA = B (A = Σ Δ_tᵀΔ_t/‖Δ_t‖², B = Σ
    Δ_t Δ_tᵀΔ_t/‖Δ_t‖²). Adam from τ = Σ Δ_t lowers the objective and approaches it."""
    d, _ = make_case(41, m=12, n=6)
    a = sum(x.T @ x / np.sum(x * x) for x in d)
    b = sum(x @ x.T @ x / np.sum(x * x) for x in d)
    best = np.linalg.solve(a.T, b.T).T

    def objective(tau):
        return sum(np.sum(((tau - x) @ x.T) ** 2) / np.sum(x * x) for x in d)

    got, info = run("wudi", d, None, {"iterations": 2000, "lr": 1e-3})
    assert info["objective_start"] == pytest.approx(objective(d.sum(0)), rel=1e-4)
    assert info["objective_end"] == pytest.approx(objective(got), rel=1e-3)
    gap = info["objective_end"] - objective(best)
    assert 0 <= gap < 0.05 * (info["objective_start"] - objective(best))
    assert rel_err(got, best) < 0.3 * rel_err(d.sum(0), best)
    assert info["iterations"] == 2000 and info["seconds"] >= 0
