"""Exact factored paths (register_factored) for low-rank experts Δ_t = B_t A_t: each equals its
method's dense fn on the stack of B_t A_t (fp64), returns None where it cannot, and meets the
closed forms of spec §5."""

import pytest
import torch

from merges.registry import FactoredTask, TensorTask, methods

F64 = torch.float64
SHAPES = {  # (m, n, ranks): m < n, m > n, differing ranks, m below T·r (the span is all of R^m)
    "wide": (48, 80, [4, 4, 4]),
    "tall": (80, 48, [4, 4, 4]),
    "ranks": (48, 80, [2, 5, 3]),
    "short": (10, 40, [4, 4, 4]),
}
CASES = {
    "actmat": [{}, {"rtol": 1e-8}],
    "tsv": [{}, {"scale": 0.5}],
    "cart": [{}, {"rank_fraction": 0.05, "scale": 0.7}, {"rank_fraction": 0.5}],
    "ace": [{}, {"eps_mode": "relative", "scale": 1.5}, {"eps": 1e-6}],
}
FLAGGED = [{"k_frac": 0.2}, {"k_frac": 0.4, "eps_mode": "relative"}]  # ACE: k = 9, 19 ≤ rank F


def factors(m, n, ranks, seed=0, norms=None):
    """Random (B_t, A_t) in fp64; with `norms`, scaled so that ‖B_t A_t‖²_F = norms[t]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t, r in enumerate(ranks):
        b = torch.randn(m, r, generator=g, dtype=F64)
        a = torch.randn(r, n, generator=g, dtype=F64)
        if norms is not None:
            b = b * (norms[t] ** 0.5 / torch.linalg.matrix_norm(b @ a))
        out.append((b, a))
    return out


def dense(name, fs, params, dtype=F64):
    task = TensorTask(name, torch.stack([b @ a for b, a in fs]).to(dtype), factor_dtype=F64)
    return methods()[name].fn(task, params), task.info


def factored(name, fs, params):
    task = FactoredTask(name, fs, (fs[0][0].shape[0], fs[0][1].shape[1]))
    return methods()[name].factored(task, params), task.info


def rel(a, b):
    return float(torch.linalg.matrix_norm(a.double() - b.double()) / torch.linalg.matrix_norm(b))


def test_factored_paths_registered():
    assert set(CASES) <= {n for n, m in methods().items() if m.factored}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "name,raw", [(n, raw) for n, variants in CASES.items() for raw in variants], ids=str
)
def test_factored_equals_dense(name, raw, shape):
    m, n, ranks = SHAPES[shape]
    params = methods()[name].parse_params(raw)
    fs = factors(m, n, ranks, seed=len(raw))
    want, want_info = dense(name, fs, params)
    got, got_info = factored(name, fs, params)
    assert got.shape == (m, n)
    assert rel(got, want) <= 1e-6
    assert got_info.keys() == want_info.keys()
    for key in ("rank_kept", "rank", "flag"):
        assert got_info.get(key) == want_info.get(key)


@pytest.mark.parametrize("shape", ["wide", "tall"])
@pytest.mark.parametrize("raw", FLAGGED, ids=str)
def test_ace_flagged_refinement(raw, shape):
    """Heterogeneous norms (ℓ_t = log τ_t around 0) set the flag; with k ≤ rank F it is exact."""
    m, n, _ = SHAPES[shape]
    params = methods()["ace"].parse_params(raw)
    fs = factors(m, n, [8, 8, 8], norms=[0.5, 1.0, 2.0])
    want, info = dense("ace", fs, params)
    got, got_info = factored("ace", fs, params)
    assert info["flag"] and got_info["flag"]
    assert rel(got, want) <= 1e-6


@pytest.mark.parametrize(
    "name,raw,norms",
    [
        ("actmat", {"solver": "fp32_pinv"}, None),  # the authors' fp32 pinv: rounding-defined
        ("actmat", {"rtol": 1e-15}, None),  # below the dense eigh's rounding floor
        ("ace", {"eps": 0.0}, None),  # singular A: LU or pinv on noise
        ("ace", {}, [0.5, 1.0, 2.0]),  # flagged, k = ⌊0.3·48⌋ = 14 > rank F ≤ 13
    ],
    ids=str,
)
def test_none_where_not_exact(name, raw, norms):
    fs = factors(48, 80, [4, 4, 4], norms=norms)
    out, info = factored(name, fs, methods()[name].parse_params(raw))
    assert out is None and info == {}


def test_tsv_rank_cut_as_the_dense_path_on_fp32_task_vectors():
    """A singular value below max(m, n)·ε_fp32·s_1 is cut, as `tsv` cuts it on fp32 deltas."""
    fs = factors(48, 80, [4, 4, 4])
    b, a = fs[0]
    fs[0] = (b * torch.tensor([1.0, 1.0, 1.0, 1e-7], dtype=F64), a)
    params = methods()["tsv"].parse_params({})
    want, _ = dense("tsv", fs, params, dtype=torch.float32)
    got, _ = factored("tsv", fs, params)
    assert rel(got, want) <= 1e-5


def orthogonal_blocks(m, n, ranks, seed=0):
    """(B_t, A_t) whose column spaces (B) and row spaces (A) are mutually orthogonal."""
    g = torch.Generator().manual_seed(seed)
    qb = torch.linalg.qr(torch.randn(m, sum(ranks), generator=g, dtype=F64))[0]
    qa = torch.linalg.qr(torch.randn(n, sum(ranks), generator=g, dtype=F64))[0]
    out, j = [], 0
    for r in ranks:
        s = torch.rand(r, generator=g, dtype=F64) + 0.5
        out.append((qb[:, j : j + r] * s, qa[:, j : j + r].T))
        j += r
    return out


def total(fs):
    return sum(b @ a for b, a in fs)


def test_actmat_closed_forms():
    p = methods()["actmat"].parse_params({})
    # mutually orthogonal A row spaces: Σ_t B_t A_t
    fs = factors(48, 80, [4, 4, 4])
    qa = torch.linalg.qr(torch.randn(80, 12, dtype=F64))[0]
    fs = [(b, qa[:, 4 * t : 4 * t + 4].T) for t, (b, _) in enumerate(fs)]
    assert rel(factored("actmat", fs, p)[0], total(fs)) <= 1e-6
    # every task the same Δ (factored differently): Δ
    b, a = factors(48, 80, [4])[0]
    same = [(b, a), (2 * b, a / 2), (b @ torch.diag(torch.tensor([1.0, -1, 2, 3], dtype=F64)), a)]
    same[2] = (same[2][0], torch.diag(torch.tensor([1.0, -1, 0.5, 1 / 3], dtype=F64)) @ a)
    assert rel(factored("actmat", same, p)[0], b @ a) <= 1e-6
    # one task: Δ
    assert rel(factored("actmat", [(b, a)], p)[0], b @ a) <= 1e-6


def test_tsv_orthogonal_singular_spaces_give_the_sum():
    fs = orthogonal_blocks(48, 80, [4, 3, 5])
    out, _ = factored("tsv", fs, methods()["tsv"].parse_params({}))
    assert rel(out, total(fs)) <= 1e-6


def test_cart_closed_forms():
    fs = factors(48, 80, [4, 4, 4])
    mean = total(fs) / 3
    # k ≥ rank(Δ_t − Δ̄): the low-rank parts sum to Σ_t (Δ_t − Δ̄) = 0, so Δ* = Δ̄
    wide = methods()["cart"].parse_params({"rank_fraction": 0.5})
    assert rel(factored("cart", fs, wide)[0], mean) <= 1e-6
    # every task the same Δ: Δ
    same = [fs[0]] * 3
    assert (
        rel(factored("cart", same, methods()["cart"].parse_params({}))[0], total(same) / 3) <= 1e-6
    )
