"""Parity with the peer: mergekit 0.1.5's own implementation of every shared method, on the same
tiny OLMo-3 checkpoints (bf16 checkpoints, and fp32 checkpoints whose deltas are not bf16 numbers),
compared with this project's merge tensor by tensor.

Both sides compute in fp32 and write fp32, so the comparison sees the arithmetic, not the final
rounding; each difference is measured in bf16 ulps of the merged value (the rounding every bf16
output takes anyway) and must stay within the method's stated tolerance. Random sparsifiers
(DARE, DELLA) draw their masks from different generators by construction, so they are compared
where no mask is drawn (density 1): the rescale, weighting, consensus and normalisation.
mergekit is a test dependency (scripts/test.sh installs it); MERGEEVAL_REQUIRE_MERGEKIT=1 (CI)
turns a missing mergekit into a failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merges.engine import run_merge
from merges.spec import MergeSpec

if os.environ.get("MERGEEVAL_REQUIRE_MERGEKIT") == "1":
    import mergekit.merge  # noqa: F401  (CI: must be importable)
mk_merge = pytest.importorskip("mergekit.merge", reason="mergekit is not installed")
mk_config = pytest.importorskip("mergekit.config")

NAMES = ["math", "code", "if"]
W3 = [0.5, 0.3, 0.8]

# nuslerp's 0.05: its angle is ⟨Δ_1, Δ_2⟩/(‖Δ_1‖‖Δ_2‖), without mergekit's two unit-vector copies
# of the tensor (memory); fp32 rounding of cos Ω moves the result by up to 0.03 ulp (measured).
# id: (project method, project params, mergekit method, mergekit global parameters,
#      mergekit per-model parameters (one dict per expert), experts used, base listed as a model,
#      tolerance in bf16 ulps of the merged value)
CASES = {
    "linear": ("linear", {"weight": W3}, "linear", {}, [{"weight": w} for w in W3], 3, False, 0.01),
    "linear_unnormalised": (
        "linear",
        {"weight": [0.4, 0.4, 0.4], "normalize": False},
        "linear",
        {"normalize": False},
        [{"weight": 0.4}] * 3,
        3,
        False,
        0.01,
    ),
    "task_arithmetic": (
        "task_arithmetic",
        {"weight": W3, "scale": 0.7},
        "task_arithmetic",
        {"lambda": 0.7},
        [{"weight": w} for w in W3],
        3,
        False,
        0.01,
    ),
    "task_arithmetic_normalised": (
        "task_arithmetic",
        {"weight": W3, "scale": 0.7, "normalize": True},
        "task_arithmetic",
        {"lambda": 0.7, "normalize": True},
        [{"weight": w} for w in W3],
        3,
        False,
        0.01,
    ),
    "ties": (
        "ties",
        {"density": [0.2, 0.3, 0.5], "weight": W3, "variant": "mergekit"},
        "ties",
        {},
        [{"weight": w, "density": d} for w, d in zip(W3, [0.2, 0.3, 0.5], strict=True)],
        3,
        False,
        0.01,
    ),
    "dare_linear": (
        "dare_linear",
        {"density": 1.0, "weight": W3, "rescale": "l1"},
        "dare_linear",
        {},
        [{"weight": w, "density": 1.0} for w in W3],
        3,
        False,
        0.01,
    ),
    "dare_ties": (
        "dare_ties",
        {"density": 1.0, "weight": W3, "rescale": "l1", "scale": 0.9},
        "dare_ties",
        {"lambda": 0.9},
        [{"weight": w, "density": 1.0} for w in W3],
        3,
        False,
        0.01,
    ),
    "breadcrumbs": (
        "breadcrumbs",
        {"density": [0.8, 0.7, 0.9], "gamma": 0.05, "weight": W3, "variant": "mergekit"},
        "breadcrumbs",
        {},
        [
            {"weight": w, "density": d, "gamma": 0.05}
            for w, d in zip(W3, [0.8, 0.7, 0.9], strict=True)
        ],
        3,
        False,
        0.01,
    ),
    "breadcrumbs_ties": (
        "breadcrumbs_ties",
        {"density": 0.6, "gamma": [0.01, 0.05, 0.1], "variant": "mergekit", "normalize": True},
        "breadcrumbs_ties",
        {"normalize": True},
        [{"weight": 1.0, "density": 0.6, "gamma": g} for g in [0.01, 0.05, 0.1]],
        3,
        False,
        0.01,
    ),
    "della": (
        "della",
        {"density": 1.0, "weight": W3, "rescale": "l1"},
        "della",
        {},
        [{"weight": w, "density": 1.0} for w in W3],
        3,
        False,
        0.01,
    ),
    "della_linear": (
        "della_linear",
        {"density": 1.0, "weight": W3, "rescale": "l1", "scale": 1.2},
        "della_linear",
        {"lambda": 1.2},
        [{"weight": w, "density": 1.0} for w in W3],
        3,
        False,
        0.01,
    ),
    "sce": (
        "sce",
        {"select_topk": 0.5, "variant": "mergekit"},
        "sce",
        {"select_topk": 0.5},
        [{}] * 3,
        3,
        False,
        0.01,
    ),
    "ram": ("ram", {}, "ram", {}, [{}] * 3, 3, False, 0.01),
    "ramplus_tl": (
        "ramplus_tl",
        {"r": 0.5, "alpha": 0.4},
        "ramplus_tl",
        {"r": 0.5, "alpha": 0.4},
        [{}] * 3,
        3,
        False,
        0.01,
    ),
    "nearswap": ("nearswap", {"t": 1e-3}, "nearswap", {"t": 1e-3}, [{}], 1, True, 0.01),
    "model_stock": ("model_stock", {}, "model_stock", {}, [{}] * 3, 3, False, 0.01),
    "model_stock_filter_wise": (
        "model_stock",
        {"filter_wise": True},
        "model_stock",
        {"filter_wise": True},
        [{}] * 3,
        3,
        False,
        0.01,
    ),
    "slerp": ("slerp", {"t": 0.3}, "slerp", {"t": 0.3}, [{}], 1, True, 0.01),
    "nuslerp": (
        "nuslerp",
        {"weight": [1.0, 2.0]},
        "nuslerp",
        {},
        [{"weight": 1.0}, {"weight": 2.0}],
        2,
        False,
        0.05,
    ),
    "nuslerp_rows": (
        "nuslerp",
        {"weight": [1.0, 2.0], "flatten": False},
        "nuslerp",
        {"nuslerp_flatten": False},
        [{"weight": 1.0}, {"weight": 2.0}],
        2,
        False,
        0.01,
    ),
    "multislerp": (
        "multislerp",
        {"weight": [1.0, 2.0, 3.0]},
        "multislerp",
        {},
        [{"weight": w} for w in [1.0, 2.0, 3.0]],
        3,
        False,
        0.01,
    ),
    "karcher": ("karcher", {}, "karcher", {}, [{}] * 3, 3, False, 0.01),
}


@pytest.fixture(scope="module")
def families(tmp_path_factory, tiny_family):
    """{'bf16': (base, experts), 'fp32': (base, experts)}: the tiny family, and an fp32 copy whose
    experts get an extra fp32 perturbation (deltas that are not bf16 numbers)."""
    base, experts = tiny_family
    root = tmp_path_factory.mktemp("fp32_family")
    g = torch.Generator().manual_seed(7)
    out = []
    for i, src in enumerate([base, *experts]):
        dst = root / src.name
        shutil.copytree(src, dst)
        for f in dst.glob("*.safetensors"):
            state = {k: v.float() for k, v in load_file(f).items()}
            if i:
                state = {
                    k: v + 1e-3 * v.std() * torch.randn(v.shape, generator=g)
                    for k, v in state.items()
                }
            save_file(state, f, metadata={"format": "pt"})
        cfg = json.loads((dst / "config.json").read_text())
        cfg["torch_dtype"] = cfg["dtype"] = "float32"
        (dst / "config.json").write_text(json.dumps(cfg))
        out.append(dst)
    return {"bf16": (base, list(experts)), "fp32": (out[0], out[1:])}


def mergekit_merge(method, global_params, per_model, base, experts, base_listed, output):
    models = [{"model": str(base)}] if base_listed else []
    models += [
        {"model": str(e), **({"parameters": p} if p else {})}
        for e, p in zip(experts, per_model, strict=True)
    ]
    cfg = {
        "merge_method": method,
        "base_model": str(base),
        "models": models,
        "dtype": "float32",
        "out_dtype": "float32",
        **({"parameters": global_params} if global_params else {}),
    }
    if method in ("linear", "karcher"):  # methods over the listed models only
        del cfg["base_model"]
    options = mk_merge.MergeOptions(lazy_unpickle=False, copy_tokenizer=False, quiet=True)
    mk_merge.run_merge(
        mk_config.MergeConfiguration.model_validate(cfg), str(output), options=options
    )
    return read_state(output)


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    state = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(f))
    return state


def bf16_ulps(a: torch.Tensor, b: torch.Tensor, w0: torch.Tensor) -> float:
    """max |a − b| in units of the bf16 spacing 2^(⌊log2 x⌋ − 7) at x = max(|a|, |b|, |W_0|): the
    rounding of a bf16 merged value, or of the base entry it was computed from (outputs that
    cancel to near zero are judged at the scale of their inputs)."""
    mag = torch.maximum(torch.maximum(a.abs(), b.abs()), w0.abs()).clamp(min=2.0**-100)
    ulp = torch.exp2(torch.floor(torch.log2(mag)) - 7)
    return float(((a - b).abs() / ulp).max())


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_mergekit(case, dtype, families, tmp_path):
    method, params, mk_method, mk_global, mk_models, n, base_listed, tol = CASES[case]
    base, experts = families[dtype]
    experts = experts[:n]
    want = mergekit_merge(
        mk_method, mk_global, mk_models, base, experts, base_listed, tmp_path / "mergekit"
    )
    spec = MergeSpec(
        method=method,
        base=base,
        experts=experts,
        output=tmp_path / "ours",
        params=params,
        dtype="float32",
        rest_policy="method",
        device="cpu",
        expert_names=NAMES[:n],
    )
    run_merge(spec, progress=False)
    got = read_state(tmp_path / "ours")
    assert sorted(got) == sorted(want)
    w0 = read_state(base)
    worst = {name: bf16_ulps(got[name], want[name].float(), w0[name].float()) for name in got}
    name = max(worst, key=worst.get)
    assert worst[name] <= tol, f"{case} ({dtype}): {name} differs by {worst[name]:.3g} bf16 ulp"
