"""End-to-end merges of tiny OLMo-3 checkpoints: every method, provenance, policy, bad input."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergeeval.errors import InputError
from merges.engine import MergeSpec, run_merge
from merges.registry import methods
from merges.stats import collect_grams

PROMPTS = "config/demo_calibration_prompts.jsonl"
EMBED = "model.embed_tokens.weight"
UP0 = "model.layers.0.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def stats(tiny_family, tmp_path_factory):
    _, experts = tiny_family
    root = tmp_path_factory.mktemp("stats")
    out = []
    for e in experts:
        collect_grams(e, PROMPTS, root / e.name, max_tokens=48, device="cpu")
        out.append(root / e.name)
    return out


def spec(tiny_family, out, method="task_arithmetic", **kw):
    base, experts = tiny_family
    return MergeSpec(
        method=method, base=base, experts=list(experts), output=out, device="cpu", **kw
    )


def weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("name", sorted(methods()))
def test_every_method_merges_and_loads_in_transformers(name, tiny_family, stats, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / name
    kw = {"stats": stats} if methods()[name].needs_stats else {}
    n = methods()[name].n_experts[1] or 3  # slerp and nearswap take one expert, nuslerp two
    base, experts = tiny_family
    record = run_merge(spec((base, experts[:n]), out, name, **kw), progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Hello, merge!", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    meta = json.loads((out / "merge.json").read_text())
    assert meta == json.loads(json.dumps(record))
    assert meta["method"] == name and meta["method_source_sha256"] == methods()[name].source_hash()
    assert meta["tensor_policy"]["rest_policy"] == "mean_delta"
    assert len(meta["experts"]) == n and meta["tokenizer_from"]["path"].endswith("math")
    diag = meta["diagnostics"][UP0]
    assert diag["role"] == "method" and 0 <= diag["bf16_lost_frac"] <= 1
    assert meta["diagnostics"][EMBED]["role"] == "mean_delta"
    assert not list(tmp_path.glob(".*partial*"))


def test_task_arithmetic_values_and_rest_policy(tiny_family, tmp_path):
    base, experts = tiny_family
    w0 = weights(base)
    ws = [weights(e) for e in experts]
    for policy in ("mean_delta", "base", "method"):
        out = tmp_path / policy
        run_merge(
            spec(tiny_family, out, params={"scale": "0.3"}, rest_policy=policy, dtype="float32"),
            progress=False,
        )
        got = weights(out)
        deltas = {k: [w[k].double() - w0[k].double() for w in ws] for k in (UP0, EMBED)}
        want_up = w0[UP0].double() + 0.3 * sum(deltas[UP0])
        assert torch.allclose(got[UP0].double(), want_up, rtol=0, atol=1e-6)
        want_embed = {
            "mean_delta": w0[EMBED].double() + sum(deltas[EMBED]) / 3,
            "base": w0[EMBED].double(),
            "method": w0[EMBED].double() + 0.3 * sum(deltas[EMBED]),
        }[policy]
        assert torch.allclose(got[EMBED].double(), want_embed, rtol=0, atol=1e-6)
        assert got[UP0].dtype == torch.float32
        assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float32"


def test_bf16_output_is_the_rounded_fp32_result(tiny_family, tmp_path):
    run_merge(spec(tiny_family, tmp_path / "f32", "average", dtype="float32"), progress=False)
    run_merge(spec(tiny_family, tmp_path / "bf16", "average"), progress=False)
    a, b = weights(tmp_path / "f32"), weights(tmp_path / "bf16")
    for k in a:
        assert b[k].dtype == torch.bfloat16 and torch.equal(a[k].to(torch.bfloat16), b[k])


def test_deterministic_bytes_and_sharded_io(tiny_family, tmp_path):
    s1 = spec(tiny_family, tmp_path / "one", "dare", max_shard_bytes=300_000)
    run_merge(s1, progress=False)
    run_merge(spec(tiny_family, tmp_path / "two", "dare", max_shard_bytes=300_000), progress=False)
    shards = sorted(p.name for p in (tmp_path / "one").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "one" / "model.safetensors.index.json").exists()
    for f in shards:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
    # a sharded folder is a valid input too: merging it with itself as every expert returns it
    one = tmp_path / "one"
    dup = MergeSpec("average", one, [one, one], tmp_path / "three", device="cpu")
    dup.allow_duplicate_experts = True
    run_merge(dup, progress=False)
    assert all(torch.equal(weights(one)[k], v) for k, v in weights(tmp_path / "three").items())


def test_tokenizer_source(tiny_family, tmp_path):
    base, experts = tiny_family
    run_merge(spec(tiny_family, tmp_path / "d", "average"), progress=False)
    assert (tmp_path / "d" / "chat_template.jinja").read_text() == (
        experts[0] / "chat_template.jinja"
    ).read_text()
    run_merge(
        spec(tiny_family, tmp_path / "c", "average", tokenizer_from=experts[1]), progress=False
    )
    assert (tmp_path / "c" / "chat_template.jinja").read_text() == (
        experts[1] / "chat_template.jinja"
    ).read_text()
    assert json.loads((tmp_path / "c" / "merge.json").read_text())["tokenizer_from"]["path"] == str(
        experts[1].resolve()
    )


def _copy(folder, dest):
    shutil.copytree(folder, dest)
    return dest


def _edit(folder, fn):
    f = folder / "model.safetensors"
    ts = load_file(f)
    fn(ts)
    save_file(ts, f, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "case,match",
    [
        ("shape", "tensor model.layers.0.mlp.up_proj.weight: shape"),
        ("missing", "has no tensor model.layers.1.self_attn.q_proj.weight"),
        ("nonfinite", "non-finite values.*model.layers.0.mlp.up_proj.weight of expert"),
        ("method", "unknown method 'nope'; valid methods: ace, actmat"),
        ("param", "no parameter 'alpha'; valid parameters: scale"),
        ("regmean", "needs statistics: pass --stats DIR once per expert"),
        ("exists", "exists; remove it or pass --force"),
        ("no_experts", "no experts"),
    ],
)
def test_bad_input_fails_cleanly(case, match, tiny_family, tmp_path):
    base, experts = tiny_family
    experts = list(experts)
    out = tmp_path / "out"
    kw = {}
    method = "task_arithmetic"
    if case in ("shape", "missing", "nonfinite"):
        bad = _copy(experts[1], tmp_path / "bad")
        experts[1] = bad
        if case == "shape":
            _edit(bad, lambda ts: ts.update({UP0: ts[UP0][:-1]}))
        elif case == "missing":
            _edit(bad, lambda ts: ts.pop("model.layers.1.self_attn.q_proj.weight"))
        else:

            def poison(ts):
                ts[UP0][3, 4] = float("nan")

            _edit(bad, poison)
    elif case == "method":
        method = "nope"
    elif case == "param":
        kw["params"] = {"alpha": "1"}
    elif case == "regmean":
        method = "regmean"
    elif case == "exists":
        out.mkdir()
    elif case == "no_experts":
        experts = []
    with pytest.raises(InputError, match=match):
        run_merge(MergeSpec(method, base, experts, out, device="cpu", **kw), progress=False)
    assert out.exists() == (case == "exists")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_replaces_existing_output(tiny_family, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (out / "merge.json").write_text("{}")  # an earlier merge's folder: --force may replace it
    run_merge(spec(tiny_family, out, "average", force=True), progress=False)
    assert not (out / "stale.txt").exists() and (out / "merge.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cli_reports_errors_without_traceback(tiny_family, tmp_path):
    import subprocess
    import sys

    base, experts = tiny_family
    cmd = [
        sys.executable,
        "-m",
        "merges",
        "run",
        "--method",
        "ties",
        "--base",
        str(base),
        "--output",
        str(tmp_path / "o"),
    ]
    cmd += [a for e in experts for a in ("--expert", str(e))] + ["--param", "density=2"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        r.returncode == 2
        and "bad parameter for method 'ties'" in r.stderr
        and "Traceback" not in r.stderr
    )
    r = subprocess.run(
        [sys.executable, "-m", "merges", "list"], capture_output=True, text=True, check=True
    )
    for name in methods():
        assert name in r.stdout
    assert "default 0.4" in r.stdout and "fp64_eigh|fp32_pinv" in r.stdout


@pytest.mark.parametrize("method", ["task_arithmetic", "average", "ties"])
def test_row_blocks_give_the_same_bytes_as_whole_tensors(
    tiny_family, tmp_path, monkeypatch, method
):
    """Row-separable merges (element-wise methods, the mean task vector of the rest) are streamed
    in row blocks and computed in chunks; tiny blocks, chunks and read-ahead budget must not
    change a single byte."""
    import merges.engine as engine
    import merges.unit_merge as unit_merge

    whole = run_merge(spec(tiny_family, tmp_path / "whole", method), progress=False)
    monkeypatch.setattr(engine, "BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(unit_merge, "CHUNK_ELEMENTS", 333)
    monkeypatch.setattr(engine, "READ_AHEAD_BYTES", 10_000)
    blocked = run_merge(spec(tiny_family, tmp_path / "blocked", method), progress=False)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (
        tmp_path / "blocked" / "model.safetensors"
    ).read_bytes()
    diag = blocked["diagnostics"]
    emb = diag["model.embed_tokens.weight"]
    assert emb["role"] == "mean_delta" and emb["processed"].endswith("row block(s)")
    assert int(emb["processed"].split()[0]) > 1
    up = diag[UP0]
    if method == "ties":  # its trim needs the whole tensor, and merge.json says so
        assert up["processed"] == "whole" and UP0 in blocked["tensor_policy"]["whole_tensors"]
        assert all(0.15 < f < 0.25 for f in up["method"]["nonzero_frac"])  # after the trim
    else:
        assert up["processed"] != "whole"
    for name, d in whole["diagnostics"].items():  # diagnostics agree up to summation order
        for key in ("merged_delta_norm", "bf16_lost_frac", "bf16_rel_err"):
            if key in d:
                assert diag[name][key] == pytest.approx(d[key], rel=1e-5, abs=1e-9), (name, key)


def test_method_applies_to_follows_the_rest_policy(tiny_family, tmp_path):
    r = run_merge(spec(tiny_family, tmp_path / "a", "ties", rest_policy="method"), progress=False)
    assert r["tensor_policy"]["method_applies_to"] == "every floating-point tensor"
    assert r["diagnostics"]["model.embed_tokens.weight"]["role"] == "method"
    r = run_merge(spec(tiny_family, tmp_path / "b", "tsv", rest_policy="method"), progress=False)
    assert "every other 2-D tensor except embeddings" in r["tensor_policy"]["method_applies_to"]
    r = run_merge(spec(tiny_family, tmp_path / "c", "tsv"), progress=False)
    assert r["tensor_policy"]["method_applies_to"] == "2-D Linear weights in transformer blocks"


def test_per_expert_parameters_from_the_command_line_are_recorded(tiny_family, tmp_path):
    """`--param KEY=V` for all, `--param EXPERT:KEY=V` for one; merge.json holds one value per
    expert, and the merged tensor is λ Σ_t w_t Δ_t with those weights."""
    from merges.cli import main

    base, experts = tiny_family
    out = tmp_path / "ta"
    args = ["run", "--method", "task_arithmetic", "--base", base, "--output", out, "--quiet"]
    args += ["--param", "scale=1.0", "--param", "weight=0.5", "--param", "code:weight=2"]
    args += ["--dtype", "float32"]
    for e in experts:
        args += ["--expert", e]
    assert main([str(a) for a in args]) == 0
    meta = json.loads((out / "merge.json").read_text())
    assert meta["expert_names"] == ["math", "code", "if"]
    assert meta["params"]["weight"] == [0.5, 2.0, 0.5]
    w0, got = weights(base)[UP0].float(), weights(out)[UP0]
    want = w0 + sum(
        w * (weights(e)[UP0].float() - w0) for w, e in zip([0.5, 2, 0.5], experts, strict=True)
    )
    assert torch.allclose(got, want, atol=1e-6)


def test_unknown_expert_prefix_is_one_error(tiny_family, tmp_path, capsys):
    from merges.cli import main

    base, experts = tiny_family
    args = ["run", "--method", "ties", "--base", base, "--output", tmp_path / "x", "--quiet"]
    args += ["--param", "maths:density=0.3"] + [a for e in experts for a in ("--expert", e)]
    assert main([str(a) for a in args]) == 2
    assert "'maths' is not an expert's name (math, code, if)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
