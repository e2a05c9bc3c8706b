"""Iso-C and Iso-CTS with `rank: numerical` (a labelled deviation from the paper): only the
numerically nonzero singular directions, exact and factored for LoRA experts. The factored path
equals the dense one (fp64, 1e-6 relative), both equal a numpy formula of the definition, the
variant reduces to the paper's on full-rank experts, its result has the rank of the experts'
span where the paper's is full rank, and an adapter merge takes the factored path (merge.json).
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from merges.methods.iso_cts import subspace_sizes
from merges.registry import FactoredTask, TensorTask, methods
from tests.test_adapters import _peft

F64 = torch.float64
NAMES = ["iso_c", "iso_cts"]
SHAPES = {"wide": (24, 40), "tall": (40, 24)}  # m < n, m > n
RANKS = {2: [3, 4], 3: [2, 3, 4]}  # T = 2, 3; Σ r_t < min(m, n)
PARAMS = {
    "iso_c": [{"rank": "numerical"}, {"rank": "numerical", "scale": 1.5}],
    "iso_cts": [
        {"rank": "numerical"},
        {"rank": "numerical", "scale": 1.5, "common_fraction": 0.5},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One BLAS and one intra-op thread, as tests/test_adapters.py (tiny matrices)."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def factors(m, n, ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(m, r, generator=g, dtype=F64), torch.randn(r, n, generator=g, dtype=F64))
        for r in ranks
    ]


def params(name, raw):
    return methods()[name].parse_params(raw)


def dense(name, deltas, raw):
    task = TensorTask(name, deltas.clone(), factor_dtype=F64)
    return methods()[name].fn(task, params(name, raw)), task.info


def stack(fs, dtype=F64):
    return torch.stack([b @ a for b, a in fs]).to(dtype)


def factored(name, fs, raw):
    task = FactoredTask(name, fs, (fs[0][0].shape[0], fs[0][1].shape[1]))
    return methods()[name].factored(task, params(name, raw)), task.info


def rel(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


def svals(x):
    return torch.linalg.svdvals(torch.as_tensor(x).double())


def test_factored_paths_registered():
    assert all(methods()[n].factored is not None for n in NAMES)


@pytest.mark.parametrize("t_count", sorted(RANKS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,raw", [(n, r) for n in NAMES for r in PARAMS[n]], ids=str)
def test_factored_equals_dense(name, raw, shape, t_count):
    """(a) fp64: ≤ 1e-6 relative (the factored result is fp32, as the engine writes it), the same
    recorded rank and subspace sizes; the dense path on fp32 task vectors (as the engine runs it)
    makes the same rank cuts."""
    m, n = SHAPES[shape]
    fs = factors(m, n, RANKS[t_count], seed=t_count + len(raw))
    want, want_info = dense(name, stack(fs), raw)
    got, got_info = factored(name, fs, raw)
    assert got.shape == (m, n)
    assert rel(got, want) <= 1e-6
    assert got_info == want_info and got_info["rank"] == sum(RANKS[t_count])
    fp32, fp32_info = dense(name, stack(fs, torch.float32), raw)
    assert fp32_info == want_info and rel(fp32, want) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_full_rank_declines_the_factored_path(name):
    """rank: full (the default, the paper's) has no factored form: None, nothing recorded."""
    out, info = factored(name, factors(24, 40, [3, 4]), {})
    assert out is None and info == {}


def numpy_iso_c(d, k, scale=1.0):
    """Σ_t Δ_t = U S Vᵀ (numpy), α·mean(S_k)·U_k V_kᵀ: the definition with k given."""
    u, s, vt = np.linalg.svd(d.sum(0), full_matrices=False)
    return scale * s[:k].mean() * u[:, :k] @ vt[:k]


def _polar(x):
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    return u @ vt


def numpy_iso_cts(d, r, f=0.8, scale=1.0):
    """The official iso_cts with r given (no cut needed on generic low-rank experts)."""
    k_c, n_t = subspace_sizes(r, d.shape[0], f)
    u, s, vt = np.linalg.svd(d.sum(0), full_matrices=False)
    uc, sc, vc = u[:, :k_c], s[:k_c], vt[:k_c].T
    blocks = [np.linalg.svd(x - uc @ uc.T @ x, full_matrices=False) for x in d]
    uh = np.concatenate([b[0][:, :n_t] for b in blocks] + [uc], 1)
    vh = np.concatenate([b[2][:n_t].T for b in blocks] + [vc], 1)
    s_bar = np.concatenate([b[1][:n_t] for b in blocks] + [sc]).mean()
    return scale * s_bar * _polar(uh) @ _polar(vh).T


@pytest.mark.parametrize("shape", SHAPES)
def test_numerical_variant_is_its_formula(shape):
    """Generic LoRA experts: iso_c keeps k = Σ r_t triplets; iso_cts takes r = Σ r_t (= the rank of
    the stacked task vectors), and no projected task is cut, so it is the official formula at r."""
    m, n = SHAPES[shape]
    fs = factors(m, n, RANKS[3], seed=7)
    d = stack(fs).numpy()
    r = sum(RANKS[3])
    got, _ = dense("iso_c", stack(fs), {"rank": "numerical", "scale": 1.5})
    assert rel(got, numpy_iso_c(d, r, 1.5)) <= 1e-10
    raw = {"rank": "numerical", "common_fraction": 0.5}
    got, info = dense("iso_cts", stack(fs), raw)
    assert (info["k_common"], info["k_per_task"]) == subspace_sizes(r, 3, 0.5) == (3, 2)
    assert rel(got, numpy_iso_cts(d, r, 0.5)) <= 1e-10


@pytest.mark.parametrize("t_count", sorted(RANKS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "name,raw",
    [("iso_c", {"scale": 1.5}), ("iso_cts", {}), ("iso_cts", {"common_fraction": 0.5})],
    ids=str,
)
def test_numerical_equals_full_on_full_rank_experts(name, raw, shape, t_count):
    """(b) Full-rank task vectors: nothing is cut (r = min(m, n), every SVD keeps its k), so the
    variant is the paper's method."""
    m, n = SHAPES[shape]
    d = torch.randn(t_count, m, n, generator=torch.Generator().manual_seed(t_count), dtype=F64)
    full, full_info = dense(name, d, raw)
    num, num_info = dense(name, d, raw | {"rank": "numerical"})
    assert rel(num, full) <= 1e-6
    assert num_info == full_info | {"rank": min(m, n)}


@pytest.mark.parametrize("t_count", sorted(RANKS))
@pytest.mark.parametrize("name", NAMES)
def test_rank_of_the_result(name, t_count):
    """(c) Why the variant exists: on LoRA experts the paper's result is full rank (s̄ on the
    completion vectors of zero singular values, whatever LAPACK returns); the numerical one has
    rank Σ r_t ≤ min(m, n), within the experts' span, every singular value α·s̄ (isotropic)."""
    m, n = SHAPES["wide"]
    fs = factors(m, n, RANKS[t_count], seed=3)
    full, _ = dense(name, stack(fs), {})
    num, _ = dense(name, stack(fs), {"rank": "numerical"})
    s_full, s_num = svals(full), svals(num)
    tol = max(m, n) * torch.finfo(torch.float32).eps * float(s_full[0])
    assert int((s_full > tol).sum()) == min(m, n)
    k = sum(RANKS[t_count])
    assert int((s_num > tol).sum()) == k < min(m, n)
    assert torch.allclose(s_num[:k], s_num[:k].mean(), rtol=1e-9)
    left = torch.linalg.qr(torch.cat([b for b, _ in fs], 1))[0]
    assert rel(left @ (left.T @ num), num) <= 1e-12  # in the span of the B_t


# ---- end to end: PEFT adapters through the engine ----


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A one-layer tiny base, two LoRA adapters (ranks 4 and 2, all-linear) and their
    PEFT-merged float64 full equivalents (devtools/tiny_adapters.py)."""
    _peft()
    from devtools.tiny_adapters import make_lora_adapter, make_one_layer_base, merge_into_full

    root = tmp_path_factory.mktemp("iso_lora")
    base = make_one_layer_base(root / "base")
    cfgs = [dict(r=4, lora_alpha=8), dict(r=2, lora_alpha=4)]
    adapters = [
        make_lora_adapter(base, root / f"a{i}", seed=i + 1, target_modules="all-linear", **cfg)
        for i, cfg in enumerate(cfgs)
    ]
    full = [merge_into_full(base, a, root / f"f{i}") for i, a in enumerate(adapters)]
    return base, adapters, full


def factored_tensors(rec: dict) -> list[str]:
    """The tensors merge.json records as merged by the factored path."""
    return sorted(
        t for t, d in rec["diagnostics"].items() if (d.get("method") or {}).get("factored")
    )


@pytest.mark.parametrize("name", NAMES)
def test_adapter_merge_takes_the_factored_path(name, lora, tmp_path):
    """(d) rank: numerical on adapters: merge.json records `factored` for every LoRA tensor (with
    its rank, Σ r_t = 6), and the merge equals the dense path on the full equivalents."""
    from merges.adapter import Adapter
    from merges.engine import MergeSpec, run_merge
    from merges.io import Checkpoint

    base, adapters, full = lora
    common = dict(method=name, base=base, device="cpu", dtype="float32")
    common["params"] = {"rank": "numerical"}
    run_merge(MergeSpec(experts=adapters, output=tmp_path / "a", **common), progress=False)
    run_merge(MergeSpec(experts=full, output=tmp_path / "f", **common), progress=False)
    rec = json.loads((tmp_path / "a" / "merge.json").read_text())
    assert rec["params"]["rank"] == "numerical"
    ck = Checkpoint(base)
    w0 = load_file(base / "model.safetensors")
    lora_tensors = [t for t in w0 if all(Adapter(a, ck).low_rank(t) for a in adapters)]
    assert factored_tensors(rec) == sorted(lora_tensors) and len(lora_tensors) == 7
    assert all(rec["diagnostics"][t]["method"]["rank"] == 6 for t in lora_tensors)
    assert factored_tensors(json.loads((tmp_path / "f" / "merge.json").read_text())) == []
    wa, wf = (load_file(tmp_path / x / "model.safetensors") for x in ("a", "f"))
    for t in lora_tensors:
        da, df = wa[t].double() - w0[t].double(), wf[t].double() - w0[t].double()
        assert float((da - df).abs().max()) <= 1e-5 * float(df.abs().max()), t


def test_adapter_merge_full_rank_stays_dense(lora, tmp_path):
    """The default (rank: full) declines: no tensor is recorded as factored."""
    from merges.engine import MergeSpec, run_merge

    base, adapters, _ = lora
    spec = MergeSpec(
        method="iso_c", base=base, experts=adapters, output=tmp_path / "o", device="cpu",
        dtype="float32",
    )  # fmt: skip
    run_merge(spec, progress=False)
    rec = json.loads((tmp_path / "o" / "merge.json").read_text())
    assert rec["params"]["rank"] == "full"
    assert factored_tensors(rec) == []
