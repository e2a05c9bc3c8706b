"""PEFT LoRA adapters as experts: ΔW as PEFT computes it, every method equal on adapters and on
their full-model equivalents (PEFT's own merge_and_unload in float64), and bad adapters refused."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from devtools.tiny_adapters import make_lora_adapter, make_one_layer_base, merge_into_full
from merges.adapter import Adapter
from merges.engine import MergeSpec, run_merge
from merges.errors import MergeInputError
from merges.io import Checkpoint
from merges.registry import methods

ADAPTERS = {  # three kinds of adapter: plain; rsLoRA with patterns and a full lm_head; few modules
    "plain": dict(r=4, lora_alpha=8, target_modules="all-linear"),
    "patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        use_rslora=True,
        rank_pattern={"down_proj": 2},
        alpha_pattern={"layers.0.self_attn.q_proj": 3},
        modules_to_save=["lm_head"],
    ),
    "few": dict(r=8, lora_alpha=4, target_modules=["q_proj", "v_proj", "embed_tokens"]),
}
STATS_PROMPTS = "config/demo_calibration_prompts.jsonl"
CHEAP = {"wudi": {"iterations": 20}}  # the equivalence holds for any parameters


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One BLAS and one intra-op thread: the tiny base's matrices are 128 wide, where thread
    barriers cost far more than the arithmetic when the cores are shared."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def _peft():
    try:
        import peft  # noqa: F401
    except ImportError:
        if os.environ.get("MERGEEVAL_REQUIRE_PEFT") == "1":
            pytest.fail("MERGEEVAL_REQUIRE_PEFT=1 but PEFT is not installed (scripts/test.sh does)")
        pytest.skip("PEFT is not installed (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """(a one-layer tiny base, {kind: adapter}, {kind: PEFT-merged float64 full folder})."""
    _peft()
    root = tmp_path_factory.mktemp("lora")
    base = make_one_layer_base(root / "base")
    adapters = {
        k: make_lora_adapter(base, root / k, seed=i + 1, **cfg)
        for i, (k, cfg) in enumerate(ADAPTERS.items())
    }
    full = {k: merge_into_full(base, a, root / f"{k}_full") for k, a in adapters.items()}
    return base, adapters, full


def _weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_delta_is_what_peft_merges(lora):
    """ΔW of every tensor = PEFT's merge_and_unload − W_0 (scale α/r, rsLoRA α/√r, rank and alpha
    patterns, a full lm_head, embedding LoRA with its saved base layer); 0 where untouched."""
    base, adapters, full = lora
    w0 = _weights(base)
    for kind, folder in adapters.items():
        reader = Adapter(folder, Checkpoint(base))
        merged = _weights(full[kind])
        for name, w in w0.items():
            want = merged[name].double() - w.double()
            got = reader.read(name).double()
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (kind, name)
            if not reader.touches(name):
                assert not want.any(), (kind, name)
    patterns = Adapter(adapters["patterns"], Checkpoint(base))
    q1 = patterns.modules["model.layers.0.self_attn.q_proj.weight"]
    down = patterns.modules["model.layers.0.mlp.down_proj.weight"]
    assert (q1.rank, q1.scale) == (4, pytest.approx(3 / 2))
    assert (down.rank, down.scale) == (2, pytest.approx(8 / 2**0.5))
    assert patterns.full == {"lm_head.weight": patterns.full["lm_head.weight"]}


def test_fan_in_fan_out_adapter_of_a_conv1d_model(tmp_path):
    """GPT-2's Conv1D stores W as [in, out]; PEFT's fan_in_fan_out ΔW = s·(B A)ᵀ in that layout."""
    _peft()
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    model.save_pretrained(tmp_path / "base")
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True)
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    pm.save_pretrained(tmp_path / "adapter")
    base = GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload().state_dict()
    w0 = _weights(tmp_path / "base")
    reader = Adapter(tmp_path / "adapter", Checkpoint(tmp_path / "base"))
    name = "transformer.h.0.attn.c_attn.weight"
    assert reader.modules[name].transposed and w0[name].shape == (32, 96)
    assert torch.allclose(reader.read(name), merged[name] - w0[name], atol=1e-6)
    assert torch.allclose(
        reader.read(name, rows=(8, 20)), (merged[name] - w0[name])[8:20], atol=1e-6
    )


def _cases():
    out = []
    for name, m in sorted(methods().items()):
        n = m.n_experts[1] or 3
        out.append(pytest.param(name, n, id=name))
    return out


@pytest.fixture(scope="module")
def adapter_stats(lora, tmp_path_factory):
    """RegMean's Grams, collected once from the full equivalents (the same inputs for both)."""
    from merges.stats import collect_grams

    _, _, full = lora
    root = tmp_path_factory.mktemp("lora_stats")
    for k, f in full.items():
        collect_grams(f, STATS_PROMPTS, root / k, max_tokens=32, device="cpu")
    return {k: root / k for k in full}


@pytest.mark.parametrize("name,n", _cases())
def test_every_method_on_adapters_equals_it_on_full_checkpoints(
    name, n, lora, adapter_stats, tmp_path
):
    """Adapter experts ≡ the same experts as full checkpoints W_0 + ΔW (float64, PEFT's ΔW); the
    factored path, where the method has one, is taken for every LoRA tensor and agrees too."""
    base, adapters, full = lora
    kinds = list(ADAPTERS)[:n]
    kw = {"stats": [adapter_stats[k] for k in kinds]} if methods()[name].needs_stats else {}
    kw |= {"params": CHEAP.get(name, {})}
    common = dict(method=name, base=base, device="cpu", dtype="float32", **kw)
    a = run_merge(
        MergeSpec(experts=[adapters[k] for k in kinds], output=tmp_path / "a", **common),
        progress=False,
    )
    run_merge(
        MergeSpec(experts=[full[k] for k in kinds], output=tmp_path / "f", **common), progress=False
    )
    wa, wf, w0 = _weights(tmp_path / "a"), _weights(tmp_path / "f"), _weights(base)
    assert wa.keys() == wf.keys()
    for t in wa:
        da, df = wa[t].double() - w0[t].double(), wf[t].double() - w0[t].double()
        scale = max(float(df.abs().max()), 1e-12)
        assert float((da - df).abs().max()) <= 1e-5 * scale, t
    factored = [t for t, d in a["diagnostics"].items() if d.get("method", {}).get("factored")]
    ck = Checkpoint(base)
    lora_tensors = [t for t in w0 if all(Adapter(adapters[k], ck).low_rank(t) for k in kinds)]
    assert set(factored) <= set(lora_tensors)
    if name in ("actmat", "tsv"):  # exact factored paths for the default parameters
        assert sorted(factored) == sorted(lora_tensors) and factored
    if methods()[name].factored is None:
        assert not factored
    assert a["experts"][0]["adapter"]["peft_type"] == "LORA"


def test_mixed_adapter_and_full_experts(lora, tmp_path):
    """An adapter and a full fine-tune (another adapter folded by PEFT) merge together: TA's
    Δ* = λ Σ ΔW_t, each read from its own kind, on every tensor."""
    base, adapters, full = lora
    out = tmp_path / "mixed"
    rec = run_merge(
        MergeSpec(
            method="task_arithmetic",
            base=base,
            experts=[adapters["plain"], full["patterns"]],
            output=out,
            device="cpu",
            dtype="float32",
        ),
        progress=False,
    )
    w0, wa, wf, got = (
        _weights(base), _weights(full["plain"]), _weights(full["patterns"]), _weights(out)
    )  # fmt: skip
    lam = rec["params"]["scale"]
    for t in w0:
        want = w0[t].double() + lam * (wa[t] - w0[t].double() + wf[t] - w0[t].double())
        assert torch.allclose(got[t].double(), want, atol=1e-6), t
    assert "adapter" in rec["experts"][0] and "adapter" not in rec["experts"][1]
    assert rec["tokenizer_from"]["path"] == str(base.resolve())


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "case,match",
    [
        ("dora", "DoRA"),
        ("ia3", "PEFT type 'IA3' is not supported"),
        ("no_weights", "has no adapter_model.safetensors"),
        ("bin_weights", "save it with safetensors"),
        ("no_config", "neither model.safetensors.index.json"),
        ("other_base", "which the base lacks"),
        ("other_shape", "was it trained on another base model"),
        ("rank_mismatch", "do not have the rank"),
        ("adapter_as_base", "base .* is a PEFT adapter"),
    ],
)
def test_bad_adapters_are_one_clear_error(case, match, lora, tmp_path):
    base, adapters, _ = lora
    bad = _copy(adapters["plain"], tmp_path / case)
    cfg_path = bad / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    weights = bad / "adapter_model.safetensors"
    if case in ("dora", "ia3", "rank_mismatch"):
        cfg.update(
            {"dora": {"use_dora": True}, "ia3": {"peft_type": "IA3"}, "rank_mismatch": {"r": 3}}[
                case
            ]
        )
        cfg_path.write_text(json.dumps(cfg))
    elif case in ("no_weights", "bin_weights"):
        if case == "bin_weights":
            (bad / "adapter_model.bin").write_bytes(b"")
        weights.unlink()
    elif case == "no_config":
        cfg_path.unlink()
    elif case in ("other_base", "other_shape"):
        w = load_file(weights)
        key = next(k for k in w if k.endswith("q_proj.lora_A.weight"))
        if case == "other_base":
            w[key.replace("layers.0", "layers.9")] = w.pop(key)
            w[key.replace("layers.0", "layers.9").replace("lora_A", "lora_B")] = w.pop(
                key.replace("lora_A", "lora_B")
            )
        else:
            w[key] = torch.zeros(4, 64)
        save_file(w, weights)
    experts, base_dir = [bad], base
    if case == "adapter_as_base":
        experts, base_dir = [adapters["few"]], bad
    spec = MergeSpec(
        method="ties", base=base_dir, experts=experts, output=tmp_path / "out", device="cpu"
    )
    with pytest.raises(MergeInputError, match=match):
        run_merge(spec, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_merges_adapters_and_exits_2_on_a_bad_one(lora, tmp_path):
    import subprocess
    import sys

    base, adapters, _ = lora
    cmd = [
        sys.executable,
        "-m",
        "merges",
        "run",
        "--method",
        "ties",
        "--base",
        str(base),
        "--device",
        "cpu",
    ]
    ok = subprocess.run(
        [
            *cmd,
            "--expert",
            str(adapters["plain"]),
            "--expert",
            str(adapters["few"]),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = _copy(adapters["plain"], tmp_path / "bad")
    cfg = json.loads((bad / "adapter_config.json").read_text()) | {"peft_type": "VERA"}
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    r = subprocess.run(
        [*cmd, "--expert", str(bad), "--output", str(tmp_path / "o2")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert (
        lines[-1].startswith("error: adapter")
        and "VERA" in lines[-1]
        and "Traceback" not in r.stderr
    )


def _peft_merged(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()


def test_adapter_output_is_exact_for_a_low_rank_merge_and_loads_in_peft(lora, tmp_path):
    """TA of a rank-4 and a rank-8 adapter has rank ≤ 12 = the default rank (Σ r_t): the adapter
    written loads in PEFT unedited, and PEFT's W_0 + BA (the embedding's update saved whole) equals
    the same merge written as a full model, on every tensor."""
    base, adapters, _ = lora
    common = dict(
        method="task_arithmetic",
        base=base,
        experts=[adapters["plain"], adapters["few"]],
        device="cpu",
        dtype="float32",
    )
    rec = run_merge(
        MergeSpec(output=tmp_path / "ad", output_format="adapter", **common), progress=False
    )
    run_merge(MergeSpec(output=tmp_path / "full", **common), progress=False)
    out = rec["output"]
    assert out["format"] == "adapter" and out["rank"] == 12 and out["min_kept_energy"] > 1 - 1e-9
    assert out["full_tensors"] == ["model.embed_tokens.weight"]
    assert not (tmp_path / "ad" / "config.json").exists()
    got, want, w0 = _peft_merged(base, tmp_path / "ad"), _weights(tmp_path / "full"), _weights(base)
    for t, w in want.items():
        d_want = w.double() - w0[t].double()
        err = float((got[t] - w.double()).abs().max())
        assert err <= 1e-5 * max(float(d_want.abs().max()), 1e-6), t
    assert (
        float((want["model.embed_tokens.weight"] - w0["model.embed_tokens.weight"]).abs().max()) > 0
    )


def test_adapter_output_by_energy_records_what_it_kept(lora, tmp_path):
    """TIES's Δ* is full rank: with energy 0.9 each module keeps the fewest directions holding 90%
    of ‖Δ*‖²_F, and 1 − kept is exactly the share PEFT's merged model misses."""
    base, adapters, _ = lora
    common = dict(
        method="ties", base=base, experts=list(adapters.values()), device="cpu", dtype="float32"
    )
    rec = run_merge(
        MergeSpec(output=tmp_path / "ad", output_format="adapter", adapter_energy=0.9, **common),
        progress=False,
    )
    run_merge(MergeSpec(output=tmp_path / "full", **common), progress=False)
    got, want, w0 = _peft_merged(base, tmp_path / "ad"), _weights(tmp_path / "full"), _weights(base)
    modules = rec["output"]["modules"]
    assert len({m["rank"] for m in modules.values()}) > 1
    for t, m in modules.items():
        d = want[t].double() - w0[t].double()
        miss = float((got[t] - want[t].double()).square().sum()) / float(d.square().sum())
        assert m["kept_energy"] >= 0.9 and miss == pytest.approx(1 - m["kept_energy"], abs=1e-5), t
        assert m["rank"] < m["numerical_rank"]


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(adapter_rank=4), "applies only to an adapter output"),
        (dict(output_format="adapter"), "needs --adapter-rank R or --adapter-energy E"),
        (dict(output_format="adapter", adapter_energy=1.5), r"energy must be in \(0, 1\]"),
    ],
)
def test_adapter_output_settings_are_checked(kw, match, tiny_family, tmp_path):
    base, experts = tiny_family
    spec = MergeSpec(
        method="ties", base=base, experts=list(experts), output=tmp_path / "o", device="cpu", **kw
    )
    with pytest.raises(MergeInputError, match=match):
        run_merge(spec, progress=False)


def test_statistics_of_an_adapter_are_those_of_its_folded_model(lora, tmp_path):
    """`merges stats --model ADAPTER --lora-base BASE` runs the base with ΔW added: the same Grams
    as PEFT's merge_and_unload folder (float32 forward), and stats.json names the base."""
    from merges.stats import collect_grams

    base, adapters, full = lora
    kw = dict(prompts=STATS_PROMPTS, max_tokens=32, device="cpu", dtype="float32", max_prompts=8)
    meta = collect_grams(adapters["patterns"], output=tmp_path / "a", lora_base=base, **kw)
    collect_grams(full["patterns"], output=tmp_path / "f", **kw)
    assert meta["model"]["lora_base"]["path"] == str(base.resolve())
    ga, gf = _weights(tmp_path / "a"), _weights(tmp_path / "f")
    assert ga.keys() == gf.keys() and ga
    for k in ga:
        assert torch.allclose(ga[k], gf[k], rtol=1e-4, atol=1e-6 * float(gf[k].abs().max())), k
    with pytest.raises(MergeInputError, match="pass its base model folder"):
        collect_grams(adapters["plain"], output=tmp_path / "x", **kw)
