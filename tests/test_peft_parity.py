"""Parity with the peer for adapters: PEFT 0.21's own `LoraModel.add_weighted_adapter`, every
combination type, against this project's merge of the same PEFT adapters, module by module.

Inputs: three rank-4 LoRA adapters of a one-layer tiny OLMo-3 base (lora_alpha 8, so one LoRA
scale s = α/r = 2), on every block Linear and on embed_tokens. PEFT runs on the base loaded in
float64 (the adapters' fp32 factors exactly), so its ΔW per module (the merged adapter's
`get_delta_weight`, in the base tensor's layout) is the reference; this project merges the
adapter folders in float32 (`run_merge`, CPU): a full model output (rest_policy `method`, so the
embeddings are merged by the method as PEFT merges them; Δ* = W* − W_0), or, for PEFT's `*_svd`
types, an adapter output at PEFT's rank (`output_format: adapter`), compared on the block weights
with rest_policy `base` (under `method` the output's embed_tokens update is written with
lora_A/lora_B keys, which PEFT does not load into an Embedding layer).

The mapping (w_t = PEFT's `weights`, K = its `density`, M = its `majority_sign_method`; PEFT's
`*_svd` types merge ΔW_t = s_t B_t A_t with the weights w_t; its other types merge the stacked
factors, B_t weighted by √(w_t s_t) and A_t by sign(w_t)·√(|w_t| s_t), into an adapter of scale 1):

| PEFT | this project |
|---|---|
| cat | task_arithmetic {weight: w, scale: 1}; the adapter output's default rank Σ r_t is exact |
| svd | task_arithmetic {weight: w, scale: 1}, adapter output at rank r (PEFT's svd_rank, default max r_t) |
| linear | task_arithmetic {weight: w, scale: 1, on: factors}; linear {weight: w, on: factors} if Σ w_t = 1 |
| ties | ties {density: K, weight: w, variant: peft, majority: M, on: factors} |
| ties_svd | ties {density: K, weight: w, variant: peft, majority: M}, rank r; all w_t = c and M total: also ties {variant: mergekit, weight: 1, scale: c} |
| dare_linear | dare_linear {density: K, weight: w, on: factors} (rescale inverse, normalize false) |
| dare_linear_svd | dare_linear {density: K, weight: w}, rank r |
| dare_ties | dare_ties {density: K, weight: w, variant: peft, majority: M, normalize: true, on: factors} |
| dare_ties_svd | dare_ties {density: K, weight: w, variant: peft, majority: M, normalize: true}, rank r |
| magnitude_prune | magnitude_prune {density: K, weight: w, on: factors} |
| magnitude_prune_svd | magnitude_prune {density: K, weight: w}, rank r; also breadcrumbs {density: K, weight: w, gamma: 0, variant: mergekit} |

PEFT's TIES (merge_utils.ties, and dare_ties after the drop) keeps exactly int(K·n) entries by
torch.topk, elects γ from the *unweighted* trimmed τ_t (total: sign Σ_t τ_t; frequency:
sign Σ_t sign τ_t; ≥ 0 is +; zeros never agree) and divides Σ_t [sign τ_t = γ] w_t τ_t by the
*number* of agreeing experts (at least 1), where the authors' code and mergekit divide by their
summed weights and elect on the weighted τ_t: `variant: peft`. `on: factors` equals PEFT's factor
types when the adapters share one LoRA scale (they share the rank, which PEFT requires, and α).

Deterministic types (every type at K < 1 but DARE's, and DARE at K = 1, where no mask is drawn):
max |Δ*_ours − ΔW_PEFT| ≤ 1e-6 · max |ΔW_PEFT| per module (measured at most 1.8e-7: the fp32
rounding of W* = W_0 + Δ*, or of the fp32 adapter factors), and Δ* = 0 wherever PEFT has no
module. DARE at K < 1 draws its masks from different generators (PEFT: torch.bernoulli on the
global generator; here: seeded per expert and tensor), so each side is checked by its masks:
every merged entry (a factor's for the factor types, ΔW's for the svd types at full rank 128,
where PEFT's SVD loses nothing) is matched to the set of experts whose entries survived, under
the rescale x_t/K and the combination rule; the residual must be rounding (≤ 1e-6 of the
module's max), the keep rate per expert K within 5σ of its binomial spread, and ‖Δ*‖²_F summed
over the modules within the two sides' random spread. This project's factor merge returns
B*·A* only, so there its keep rate is merge.json's `nonzero_frac` and its draw is checked by the
norm. PEFT is a test dependency (scripts/test.sh installs it); MERGEEVAL_REQUIRE_PEFT=1 (CI)
turns a missing PEFT into a failure instead of a skip.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from threadpoolctl import threadpool_limits

from devtools.tiny_adapters import make_lora_adapter, make_one_layer_base, merge_into_full
from merges.adapter import Adapter
from merges.engine import MergeSpec, run_merge
from merges.errors import MergeInputError
from merges.io import Checkpoint
from merges.registry import FactoredTask, methods
from tests.test_adapters import _peft

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODULES = len(TARGETS) + 1  # the one layer's block Linears and embed_tokens
RANK, ALPHA = 4, 8  # one LoRA scale s = 2 for every adapter and module
NAMES = ["e0", "e1", "e2"]
W = [0.5, 1.0, 0.7]
TOL = 1e-6  # of the module's max |ΔW|
FULL_RANK = 128  # min(m, n) of every adapted module: PEFT's SVD at this rank is exact


@dataclass
class Peer:
    base: Path
    adapters: list[Path]
    model: object  # peft.PeftModel on the float64 base, the adapters loaded as e0, e1, e2
    w0: dict[str, torch.Tensor]
    counter: itertools.count


def _adapter(base: Path, out: Path, seed: int) -> Path:
    """A PEFT adapter with random B factors, and a random A for embed_tokens too (PEFT initialises
    an embedding's A to 0, which would make its ΔW 0); the embedding's base layer, which PEFT saves
    beside it, is dropped, so that every adapted tensor is s·B·A alone (the factored path)."""
    make_lora_adapter(
        base, out, seed, r=RANK, lora_alpha=ALPHA, target_modules=[*TARGETS, "embed_tokens"]
    )
    f = out / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(1000 + seed)
    state = {}
    for k, v in load_file(f).items():
        if ".lora_" not in k:
            continue
        state[k] = torch.randn(v.shape, generator=g) * 0.05 if "lora_embedding_A" in k else v
    save_file(state, f, metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One BLAS and one intra-op thread: on 128-wide matrices (PEFT's SVDs, the adapter output's
    eigh) the thread barriers of OpenBLAS and torch cost up to 100× the arithmetic when the cores
    are shared (measured: a 128×128 eigh 0.9 s with 2 threads on a busy 2-core machine, 8 ms
    with 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    _peft()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("peft_parity")
    base = make_one_layer_base(root / "base")
    adapters = [_adapter(base, root / n, seed=21 + i) for i, n in enumerate(NAMES)]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64),
        adapters[0],
        adapter_name=NAMES[0],
    )
    for name, folder in zip(NAMES[1:], adapters[1:], strict=True):
        model.load_adapter(folder, adapter_name=name)
    w0 = {k: v.double() for k, v in load_file(base / "model.safetensors").items()}
    return Peer(base, adapters, model, w0, itertools.count())


def _lora_layers(model, adapter: str):
    """(base tensor name, layer, is_embedding) of every LoRA layer holding `adapter`."""
    from peft.tuners.lora import LoraLayer

    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            emb = adapter in layer.lora_embedding_A
            if emb or adapter in layer.lora_A:
                yield name.removeprefix("base_model.model.") + ".weight", layer, emb


def _factors(layer, adapter: str, emb: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's (B, A) of one adapter, in PEFT's layout."""
    if emb:
        return layer.lora_embedding_B[adapter].detach(), layer.lora_embedding_A[adapter].detach()
    return layer.lora_B[adapter].weight.detach(), layer.lora_A[adapter].weight.detach()


def peft_merge(peer: Peer, combination: str, weights, seed: int | None = None, **kw):
    """PEFT's add_weighted_adapter of e0..e2: ({tensor: ΔW}, {tensor: merged (B, A)})."""
    name = f"merged{next(peer.counter)}"
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # density 1: "no pruning will be performed"
        torch.manual_seed(0 if seed is None else seed)
        peer.model.add_weighted_adapter(NAMES, weights, name, combination_type=combination, **kw)
    deltas, factors = {}, {}
    for tensor, layer, emb in _lora_layers(peer.model, name):
        deltas[tensor] = layer.get_delta_weight(name).detach().clone()
        factors[tensor] = tuple(x.clone() for x in _factors(layer, name, emb))
    peer.model.delete_adapter(name)
    return deltas, factors


def ours(peer: Peer, tmp: Path, method: str, params: dict, rank: int | None | str = "model"):
    """This project's merge of the adapter folders: ({tensor: Δ*}, merge.json). rank "model": a
    full model output; None or an int: an adapter output at the default or that rank."""
    full = rank == "model"
    spec = MergeSpec(
        method=method,
        base=peer.base,
        experts=peer.adapters,
        output=tmp,
        params=params,
        dtype="float32",
        device="cpu",
        expert_names=NAMES,
        rest_policy="method" if full else "base",
        output_format="model" if full else "adapter",
        adapter_rank=None if full else rank,
    )
    record = run_merge(spec, progress=False)
    if full:
        merged = load_file(tmp / "model.safetensors")
        return {k: merged[k].double() - w0 for k, w0 in peer.w0.items()}, record
    reader = Adapter(tmp, Checkpoint(peer.base))
    return {k: reader.read(k).double() for k in peer.w0}, record


# id: (PEFT combination type, PEFT keywords, project method, project params, output: "model" or
#      an adapter rank (None: the default))
DETERMINISTIC = {
    "cat": ("cat", {}, "task_arithmetic", {"weight": W, "scale": 1.0}, None),
    "svd": ("svd", {}, "task_arithmetic", {"weight": W, "scale": 1.0}, RANK),
    "linear": (
        "linear",
        {},
        "task_arithmetic",
        {"weight": W, "scale": 1.0, "on": "factors"},
        "model",
    ),
    "linear_weights_sum_to_1": (
        "linear",
        {"weights": [0.2, 0.5, 0.3]},
        "linear",
        {"weight": [0.2, 0.5, 0.3], "on": "factors"},
        "model",
    ),
    "ties_total": (
        "ties",
        {"density": 0.5},
        "ties",
        {"density": 0.5, "weight": W, "variant": "peft", "on": "factors"},
        "model",
    ),
    "ties_frequency": (
        "ties",
        {"density": 0.3, "majority_sign_method": "frequency"},
        "ties",
        {"density": 0.3, "weight": W, "variant": "peft", "majority": "frequency", "on": "factors"},
        "model",
    ),
    "ties_svd_total": (
        "ties_svd",
        {"density": 0.3},
        "ties",
        {"density": 0.3, "weight": W, "variant": "peft"},
        RANK,
    ),
    "ties_svd_frequency_full_rank": (
        "ties_svd",
        {"density": 0.3, "majority_sign_method": "frequency", "svd_rank": FULL_RANK},
        "ties",
        {"density": 0.3, "weight": W, "variant": "peft", "majority": "frequency"},
        "model",
    ),
    "ties_svd_equal_weights_full_rank": (
        "ties_svd",
        {"weights": [0.6] * 3, "density": 0.3, "svd_rank": FULL_RANK},
        "ties",
        {"density": 0.3, "weight": 1.0, "scale": 0.6, "variant": "mergekit"},
        "model",
    ),
    "magnitude_prune": (
        "magnitude_prune",
        {"density": 0.4},
        "magnitude_prune",
        {"density": 0.4, "weight": W, "on": "factors"},
        "model",
    ),
    "magnitude_prune_svd": (
        "magnitude_prune_svd",
        {"density": 0.4},
        "magnitude_prune",
        {"density": 0.4, "weight": W},
        RANK,
    ),
    "magnitude_prune_svd_full_rank_breadcrumbs": (
        "magnitude_prune_svd",
        {"density": 0.4, "svd_rank": FULL_RANK},
        "breadcrumbs",
        {"density": 0.4, "weight": W, "gamma": 0.0, "variant": "mergekit"},
        "model",
    ),
    "dare_linear_density_1": (
        "dare_linear",
        {"density": 1.0},
        "dare_linear",
        {"density": 1.0, "weight": W, "on": "factors"},
        "model",
    ),
    "dare_ties_density_1": (
        "dare_ties",
        {"density": 1.0},
        "dare_ties",
        {"density": 1.0, "weight": W, "variant": "peft", "normalize": True, "on": "factors"},
        "model",
    ),
}


@pytest.mark.parametrize("case", list(DETERMINISTIC))
def test_matches_peft(case, peer, tmp_path):
    combination, kw, method, params, output = DETERMINISTIC[case]
    kw = dict(kw)
    want, _ = peft_merge(peer, combination, kw.pop("weights", W), **kw)
    got, record = ours(peer, tmp_path / "ours", method, params, output)
    compared = {k: v for k, v in want.items() if output == "model" or "embed" not in k}
    assert len(compared) == len(TARGETS) + (output == "model")
    worst = {k: float((got[k] - v).abs().max() / v.abs().max()) for k, v in compared.items()}
    name = max(worst, key=worst.get)
    assert worst[name] <= TOL, f"{case}: {name} differs by {worst[name]:.3g} of its max |ΔW|"
    rest = [k for k in got if k not in want and got[k].any()]
    assert not rest, f"{case}: Δ* ≠ 0 where PEFT has no module: {rest}"
    if params.get("on") == "factors":  # the factor merge ran on every adapted tensor
        diag = record["diagnostics"]
        assert all(diag[k]["method"].get("factored") for k in want), case


SUBSETS = torch.tensor(list(itertools.product((0.0, 1.0), repeat=len(NAMES))), dtype=torch.float64)


def explained(merged, parts, coeffs, density, rule):
    """Per entry of `merged`, the set S of experts whose entries survived that explains it best:
    Σ_{t∈S} c_t x_t/K (linear), or PEFT's election (total) and disjoint merge of {x_t/K: t ∈ S}
    (ties). Returns (S [entries, T] as 0/1, the largest residual ÷ max |merged|)."""
    x = parts.reshape(len(NAMES), -1) / density
    c = torch.tensor(coeffs, dtype=x.dtype)[:, None]
    values = []
    for s in SUBSETS:
        kept = x * s[:, None]
        if rule == "linear":
            values.append((c * kept).sum(0))
            continue
        agree = kept.sign() == torch.where(kept.sum(0) >= 0, 1.0, -1.0)
        values.append((c * kept * agree).sum(0) / agree.sum(0).clamp(min=1))
    err = (torch.stack(values) - merged.reshape(-1)).abs()
    best = err.min(0)
    return SUBSETS[best.indices], float(best.values.max() / merged.abs().max())


def keep_band(density: float, entries: int) -> float:
    """5σ of a binomial keep rate over `entries` draws."""
    return 5 * math.sqrt(density * (1 - density) / entries)


DENSITY = 0.5
# id: (PEFT type, project method, project params beyond density and weight, combination rule)
RANDOM = {
    "dare_linear": ("dare_linear", "dare_linear", {"on": "factors"}, "linear"),
    "dare_ties": (
        "dare_ties",
        "dare_ties",
        {"variant": "peft", "normalize": True, "on": "factors"},
        "ties",
    ),
    "dare_linear_svd": ("dare_linear_svd", "dare_linear", {}, "linear"),
    "dare_ties_svd": (
        "dare_ties_svd",
        "dare_ties",
        {"variant": "peft", "normalize": True},
        "ties",
    ),
}


@pytest.mark.parametrize("case", list(RANDOM))
def test_dare_matches_peft_in_distribution(case, peer, tmp_path):
    """Keep rate K per expert, rescale 1/K and the combination rule on each side; ‖Δ*‖²_F of the
    two draws within their spread (the factor types' B*·A*: ±15%, measured 1.9% and 0.2%, PEFT's
    own draws spread by ±5%; the svd types': ±5%, measured 0.3%, PEFT's draws by ±1%). With ties,
    an entry whose survivor was out-voted reads as dropped, so only the linear types' keep rates
    are read off the merged entries."""
    combination, method, extra, rule = RANDOM[case]
    svd = combination.endswith("_svd")
    kw = {"svd_rank": FULL_RANK} if svd else {}
    want, merged_factors = peft_merge(peer, combination, W, density=DENSITY, **kw)
    got, record = ours(peer, tmp_path / "ours", method, {"density": DENSITY, "weight": W, **extra})
    experts = {}
    for tensor, layer, emb in _lora_layers(peer.model, NAMES[0]):
        pairs = [_factors(layer, n, emb) for n in NAMES]
        deltas = [layer.get_delta_weight(n).detach() for n in NAMES]
        experts[tensor] = ([b for b, _ in pairs], [a for _, a in pairs], deltas)
    assert len(experts) == len(want) == MODULES
    s = ALPHA / RANK
    sides = {"peft": want} | ({"ours": got} if svd else {})
    for side, deltas in sides.items():
        kept, worst = [], 0.0
        for tensor, (bs, as_, ds) in experts.items():
            if svd:
                pieces = [(deltas[tensor], torch.stack(ds), W)]
            else:  # PEFT's factor weights: √(w s) on B, sign(w)·√(|w| s) on A
                b, a = merged_factors[tensor]
                root = [math.sqrt(w * s) for w in W]
                pieces = [(b, torch.stack(bs), root), (a, torch.stack(as_), root)]
            for merged, parts, coeffs in pieces:
                subsets, residual = explained(merged, parts, coeffs, DENSITY, rule)
                kept.append(subsets)
                worst = max(worst, residual)
        assert worst <= TOL, f"{case} ({side}): an entry is no rescaled combination ({worst:.3g})"
        if rule == "linear":
            rate = torch.cat(kept).mean(0)
            band = keep_band(DENSITY, sum(len(k) for k in kept))
            assert ((rate - DENSITY).abs() <= band).all(), (case, side, rate.tolist())
    if not svd:  # this project's factor masks: merge.json's kept share of each factor entry
        size = {k: bs[0].numel() + as_[0].numel() for k, (bs, as_, _) in experts.items()}
        diag = {k: record["diagnostics"][k]["method"] for k in want}
        assert all(d.get("factored") for d in diag.values())
        entries = sum(size.values())
        rate = sum(torch.tensor(diag[k]["nonzero_frac"]) * size[k] for k in want) / entries
        assert ((rate - DENSITY).abs() <= keep_band(DENSITY, entries)).all(), rate.tolist()
    ratio = sum(float(got[k].square().sum()) for k in want) / sum(
        float(v.square().sum()) for v in want.values()
    )
    assert abs(ratio - 1) <= (0.05 if svd else 0.15), f"{case}: ‖Δ*‖² ratio {ratio:.3f}"
    rest = [k for k in got if k not in want and got[k].any()]
    assert not rest, rest


def test_factors_need_lora_experts(peer, tmp_path):
    """on: factors merges LoRA factors: full checkpoints are one clear error, not a dense merge."""
    full = [merge_into_full(peer.base, a, tmp_path / a.name) for a in peer.adapters[:2]]
    spec = MergeSpec(
        method="ties",
        base=peer.base,
        experts=full,
        output=tmp_path / "out",
        params={"variant": "peft", "on": "factors"},
        device="cpu",
    )
    with pytest.raises(
        MergeInputError, match="ties with on=factors needs every expert to be a LoRA"
    ):
        run_merge(spec, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "method,params,match",
    [
        ("ties", {"on": "factors"}, "set variant: peft"),
        ("ties", {"majority": "frequency"}, "set variant: peft"),
        ("dare_ties", {"on": "factors", "variant": "mergekit"}, "set variant: peft"),
        ("linear", {"on": "factors", "normalize": False}, "needs normalize: true"),
        ("task_arithmetic", {"on": "weights"}, "on"),
    ],
)
def test_peft_options_are_checked(method, params, match):
    with pytest.raises(MergeInputError, match=match):
        methods()[method].parse_params(params)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_linear", "magnitude_prune"])
def test_factors_of_differing_ranks_are_refused(method):
    """PEFT stacks the factors, so its factor types need one rank; so does on: factors."""
    g = torch.Generator().manual_seed(0)
    fs = [
        (torch.randn(12, r, generator=g, dtype=torch.float64), torch.randn(r, 8, generator=g))
        for r in (2, 4)
    ]
    fs = [(b, a.double()) for b, a in fs]
    raw = {"on": "factors", **({"variant": "peft"} if method == "ties" else {})}
    params = methods()[method].parse_params(raw)
    with pytest.raises(MergeInputError, match=r"need one rank.*ranks \[2, 4\]"):
        methods()[method].factored(FactoredTask("t.weight", fs, (12, 8)), params)


def test_exact_trim_keeps_int_k_n_like_peft():
    """PEFT's magnitude_based_pruning keeps exactly int(K·n) entries; so does `trim_exact_` on
    fp32 task vectors with many tied magnitudes (the ties at the threshold kept in flat order)."""
    _peft()
    from peft.utils.merge_utils import prune

    from merges.methods.ties import trim_exact_

    g = torch.Generator().manual_seed(0)
    x = (torch.randint(-6, 7, (37, 29), generator=g) / 4).float()
    for density in (0.05, 0.3, 0.77, 1.0):
        want = prune(x.clone(), density, "magnitude")
        got = trim_exact_(x.clone(), density)
        assert int(torch.count_nonzero(got)) == int(torch.count_nonzero(want))
        assert torch.equal(got.abs().flatten().sort().values, want.abs().flatten().sort().values)
        assert torch.equal(got[got != 0], x[got != 0])
