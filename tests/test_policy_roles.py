"""Every tensor kind of an OLMo-3 checkpoint: its role and its merged value under each rest policy.

The expected roles are a table written from the spec (§1.3, merges/policy.py's docstring), not
from `tensor_role`; the expected values are fp64 formulas written here. The merges run end to end
(`run_merge` on a tiny checkpoint with OLMo-3's tensor names), one method of each kind the policy
distinguishes: element-wise (task_arithmetic), whole-tensor but any shape (model_stock),
matrix-only (iso_c) and statistics-reading (regmean).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from devtools.olmo3_layout import layout
from merges.engine import MergeSpec, run_merge
from merges.policy import REST_POLICIES, describe, tensor_role
from merges.registry import methods

HIDDEN, INTER, VOCAB, LAYERS = 6, 10, 12, 2
N_EXPERTS = 3

# The kind of every OLMo-3 tensor name (each name must match exactly one pattern).
KINDS = {
    "embed_tokens": r"^model\.embed_tokens\.weight$",
    "lm_head": r"^lm_head\.weight$",
    "final_norm": r"^model\.norm\.weight$",
    "q_norm": r"^model\.layers\.\d+\.self_attn\.q_norm\.weight$",
    "k_norm": r"^model\.layers\.\d+\.self_attn\.k_norm\.weight$",
    "post_attention_layernorm": r"^model\.layers\.\d+\.post_attention_layernorm\.weight$",
    "post_feedforward_layernorm": r"^model\.layers\.\d+\.post_feedforward_layernorm\.weight$",
    **{p: rf"^model\.layers\.\d+\.self_attn\.{p}\.weight$" for p in ("q_proj", "k_proj")},
    **{p: rf"^model\.layers\.\d+\.self_attn\.{p}\.weight$" for p in ("v_proj", "o_proj")},
    **{p: rf"^model\.layers\.\d+\.mlp\.{p}\.weight$" for p in ("gate_proj", "up_proj")},
    "down_proj": r"^model\.layers\.\d+\.mlp\.down_proj\.weight$",
}
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NORMS = (
    "final_norm",
    "q_norm",
    "k_norm",
    "post_attention_layernorm",
    "post_feedforward_layernorm",
)

# The spec's table. Method classes: "any" = not matrix_only (element-wise or whole-tensor, any
# shape), "matrix" = matrix_only without statistics, "stats" = needs_stats. Under `method` the
# method also takes every other tensor it can: all of them for "any", the 2-D ones except the
# embeddings for "matrix" (lm_head, but not the 1-D norms), none for "stats" (no Grams exist for
# them); whatever it does not take gets the mean task vector.
EXPECTED_ROLE: dict[tuple[str, str], dict[str, str]] = {}
for _kind in KINDS:
    for _cls in ("any", "matrix", "stats"):
        if _kind in BLOCK_LINEARS:
            roles = {p: "method" for p in REST_POLICIES}
        else:
            takes = _cls == "any" or (_cls == "matrix" and _kind == "lm_head")
            roles = {
                "mean_delta": "mean_delta",
                "base": "base",
                "method": "method" if takes else "mean_delta",
            }
        EXPECTED_ROLE[_kind, _cls] = roles


def kind_of(name: str) -> str:
    hits = [k for k, pat in KINDS.items() if re.match(pat, name)]
    assert len(hits) == 1, f"{name} matches {hits}"
    return hits[0]


def method_class(method) -> str:
    return "stats" if method.needs_stats else "matrix" if method.matrix_only else "any"


def test_olmo3_layout_has_every_kind_and_nothing_else():
    names = layout(LAYERS, HIDDEN, INTER, VOCAB)
    kinds = [kind_of(n) for n, _ in names]  # fails on a name of no (or two) kinds
    assert set(kinds) == set(KINDS)
    assert len(names) == 3 + LAYERS * (len(BLOCK_LINEARS) + 4)


@pytest.mark.parametrize("policy", REST_POLICIES)
def test_role_of_every_tensor_kind_for_every_method(policy):
    """tensor_role against the table, for all registered methods at OLMo-3-7B's shapes."""
    assert set(REST_POLICIES) == {"mean_delta", "base", "method"}
    names = layout(1)
    for method in methods().values():
        cls = method_class(method)
        for name, shape in names:
            want = EXPECTED_ROLE[kind_of(name), cls][policy]
            assert tensor_role(name, shape, method, policy) == want, (method.name, name)
        taken = {kind_of(n) for n, _ in names if EXPECTED_ROLE[kind_of(n), cls][policy] == "method"}
        text = describe(method, policy)
        assert (taken == set(KINDS)) == (text == "every floating-point tensor"), (method.name, text)
        assert ("except embeddings" in text) == (taken == {*BLOCK_LINEARS, "lm_head"})


def test_block_linear_needs_two_dimensions_and_a_layer_index():
    ta = methods()["task_arithmetic"]
    # a 1-D weight inside a block is not a Linear; a 2-D weight outside the blocks is not either
    assert tensor_role("model.layers.3.mlp.up_proj.weight", (8,), ta, "base") == "base"
    assert tensor_role("model.layers.3.mlp.up_proj.weight", (8, 4), ta, "base") == "method"
    assert tensor_role("model.mylayers.3.up.weight", (8, 4), ta, "base") == "base"
    assert tensor_role("model.layers.x.up.weight", (8, 4), ta, "base") == "base"
    assert tensor_role("model.layers.3.up.bias", (8, 4), ta, "base") == "base"


# ---- end to end: the merged value of every tensor under every rest policy ----


def _save(folder, tensors):
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "olmo3"}))
    (folder / "tokenizer.json").write_text("{}")


GRAM_OF = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "down_in",
}


def _gram_key(name):
    layer, leaf = re.match(r"^(model\.layers\.\d+)\..*\.(\w+)\.weight$", name).groups()
    return f"{layer}.{GRAM_OF[leaf]}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Base + 3 experts with OLMo-3's names (fp32), and per-expert RegMean Grams (fp64 arrays)."""
    root = tmp_path_factory.mktemp("olmo3")
    g = torch.Generator().manual_seed(7)
    names = layout(LAYERS, HIDDEN, INTER, VOCAB)
    w0 = {n: torch.randn(s, generator=g) for n, s in names}
    shared = {n: 0.3 * torch.randn(w.shape, generator=g) for n, w in w0.items()}
    experts = []
    for t in range(N_EXPERTS):  # a shared part (model_stock's cosines ≈ 0.5) plus each its own
        experts.append(
            {
                n: w + shared[n] + (0.25 + 0.05 * t) * torch.randn(w.shape, generator=g)
                for n, w in w0.items()
            }
        )
    _save(root / "base", w0)
    for t, e in enumerate(experts):
        _save(root / f"e{t}", e)
    grams, stats = [], []
    keys = sorted({_gram_key(n) for n, _ in names if kind_of(n) in BLOCK_LINEARS})
    for t in range(N_EXPERTS):
        store = {}
        for key in keys:
            width = INTER if key.endswith("down_in") else HIDDEN
            x = torch.randn(4 * width, width, generator=g)
            store[key] = x.T @ x / (4 * width)  # SPD, condition number O(10)
        folder = root / f"stats{t}"
        folder.mkdir()
        save_file(store, str(folder / "grams.safetensors"))
        (folder / "stats.json").write_text("{}")
        grams.append({k: v.double().numpy() for k, v in store.items()})
        stats.append(folder)
    as64 = lambda ws: {n: w.double().numpy() for n, w in ws.items()}  # noqa: E731
    return root, as64(w0), [as64(e) for e in experts], grams, stats


def _method_delta(method, deltas, grams, name):
    """Δ* of one tensor by the method's formula, in fp64 (deltas [T, *shape])."""
    if method == "task_arithmetic":
        return 0.3 * deltas.sum(0)
    if method == "model_stock":  # mean pairwise cosine of the flattened deltas, t = Nc/(1+(N−1)c)
        flat = deltas.reshape(len(deltas), -1)
        unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
        c = np.mean([unit[i] @ unit[j] for i, j in pairs])
        n = len(flat)
        return n * c / (1 + (n - 1) * c) * deltas.mean(0)
    if method == "iso_c":  # mean singular value of Σ Δ_t times its polar factor
        u, s, vt = np.linalg.svd(deltas.sum(0), full_matrices=False)
        return s.mean() * u @ vt
    if method == "regmean":  # alpha 0.5: G̃ = (G + diag G)/2, Δ* = (Σ Δ G̃)(Σ G̃)⁻¹
        key = _gram_key(name)
        gt = [0.5 * g[key] + 0.5 * np.diag(np.diag(g[key])) for g in grams]
        num = sum(d @ x for d, x in zip(deltas, gt, strict=True))
        return np.linalg.solve(sum(gt), num.T).T  # Σ G̃ is symmetric
    raise AssertionError(method)


PARAMS = {"task_arithmetic": {"scale": 0.3}, "regmean": {"alpha": 0.5}}


@pytest.mark.parametrize("policy", REST_POLICIES)
@pytest.mark.parametrize("method", ["task_arithmetic", "model_stock", "iso_c", "regmean"])
def test_merged_value_of_every_tensor_kind(checkpoint, tmp_path, method, policy):
    root, w0, experts, grams, stats = checkpoint
    m = methods()[method]
    spec = MergeSpec(
        method=method,
        base=root / "base",
        experts=[root / f"e{t}" for t in range(N_EXPERTS)],
        output=tmp_path / "out",
        params=PARAMS.get(method, {}),
        stats=stats if m.needs_stats else [],
        device="cpu",
        dtype="float32",
        rest_policy=policy,
    )
    record = run_merge(spec, progress=False)
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(got) == sorted(w0)
    seen = set()
    for name in w0:
        kind = kind_of(name)
        role = EXPECTED_ROLE[kind, method_class(m)][policy]
        seen.add((kind, role))
        assert record["diagnostics"][name]["role"] == role, name
        deltas = np.stack([e[name] - w0[name] for e in experts])
        candidates = {"base": w0[name], "mean_delta": w0[name] + deltas.mean(0)}
        if kind in BLOCK_LINEARS or not m.needs_stats and (deltas.ndim == 3 or not m.matrix_only):
            candidates["method"] = w0[name] + _method_delta(method, deltas, grams, name)
        out = got[name].double().numpy()
        if role == "base":  # W_0 kept bit for bit
            assert np.array_equal(out, w0[name]), name
        # fp32 output: W_t − W_0 and W_0 + Δ* rounded to fp32 (|W| ≲ 5: ≤ 3e-7 each), the
        # methods' fp32 steps (sums, norms: ≲ 1e-6); the roles' values differ by > 1e-3
        # (checked below), so 2e-5 tells them apart with a wide margin.
        assert np.abs(out - candidates[role]).max() <= 2e-5, (name, role)
        others = [v for r, v in candidates.items() if r != role]
        assert min(np.abs(v - candidates[role]).max() for v in others) > 1e-3, name
    assert {k for k, _ in seen} == set(KINDS)
