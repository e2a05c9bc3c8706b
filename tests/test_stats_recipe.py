"""`merges stats` recipes: padding masked vs kept (with --pad-to), the generation prompt, and the
recipe recorded in stats.json, in merge.json and (the prompts' selection) by download-prompts.

The kept-padding Grams are checked against inputs computed here, independently of merges.stats:
layer 0's q/k/v input is the raw token embedding (post-norm OLMo), so a pad position contributes
e_pad e_padᵀ; layer 1's is the residual stream after block 0, read from `output_hidden_states`
of a forward pass of the same padded batch.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from merges.cli import main as merges_main
from merges.errors import MergeInputError
from merges.grams import GramStore
from merges.hub import download_prompts, prompts_sidecar
from merges.stats import collect_grams, render

PAD_TO = 300  # the Math template alone is ~240 tokens (bytes) long
PROMPTS = [
    "What is 2 + 3?",
    "Name a prime number larger than ten.",
    "Reverse the string 'abc'.",
    "Write one sentence without the letter e, please, and keep it short.",
    "Hi",
    "Explain, step by step and with care, " * 4,  # longer than PAD_TO: truncated
]


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def padded_batch(tok, template, pad_to):
    """input_ids / attention mask [n, pad_to]: the Math template without a generation prompt,
    truncated and right-padded to pad_to, built here without merges.stats."""
    rows = []
    for p in PROMPTS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], chat_template=template, tokenize=False
        )
        ids = tok(text, add_special_tokens=False).input_ids[:pad_to]
        rows.append(ids)
    ids = torch.full((len(rows), pad_to), tok.pad_token_id)
    mask = torch.zeros((len(rows), pad_to), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def authors_stats(tiny_family, prompts, out, padding, **kw):
    base, experts = tiny_family
    return collect_grams(
        base,
        prompts,
        out,
        chat_template_from=experts[0],  # the Math expert's template, run on the base
        generation_prompt=False,
        padding=padding,
        pad_to=PAD_TO,
        batch_size=2,
        device="cpu",
        dtype="float32",
        **kw,
    )


def test_kept_padding_adds_the_pad_positions_exactly(tiny_family, prompts, tmp_path):
    base, experts = tiny_family
    masked_meta = authors_stats(tiny_family, prompts, tmp_path / "masked", "masked")
    kept_meta = authors_stats(tiny_family, prompts, tmp_path / "kept", "kept")
    tok = AutoTokenizer.from_pretrained(base)
    template = AutoTokenizer.from_pretrained(experts[0]).chat_template
    ids, mask = padded_batch(tok, template, PAD_TO)
    n_real, n_pad = int(mask.sum()), int((mask == 0).sum())
    assert n_pad > 150 and int(mask[-1].sum()) == PAD_TO  # many pads; the last one truncated
    assert masked_meta["n_tokens"] == kept_meta["n_tokens"] == n_real
    assert masked_meta["n_positions"] == n_real
    assert kept_meta["n_positions"] == n_real + n_pad == len(PROMPTS) * PAD_TO
    masked, kept = GramStore(tmp_path / "masked"), GramStore(tmp_path / "kept")

    # layer 0: the input is the token embedding; every pad position adds e_pad e_padᵀ
    emb = load_file(base / "model.safetensors")["model.embed_tokens.weight"].double()
    e_pad = emb[tok.pad_token_id]
    x_real = emb[ids[mask.bool()]]
    g_masked = masked.gram_for("model.layers.0.self_attn.q_proj.weight").double()
    g_kept = kept.gram_for("model.layers.0.self_attn.q_proj.weight").double()
    assert torch.allclose(g_masked, x_real.T @ x_real / n_real, rtol=1e-5, atol=1e-9)
    want = (n_real * g_masked + n_pad * torch.outer(e_pad, e_pad)) / (n_real + n_pad)
    assert torch.allclose(g_kept, want, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(g_kept, g_masked, rtol=1e-2)

    # layer 1: the input is block 0's output; the pads' rows come from a forward pass here
    net = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        hs = net(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    hs = hs.double()
    x_real, x_pad = hs[mask.bool()], hs[~mask.bool()]
    g_masked = masked.gram_for("model.layers.1.self_attn.k_proj.weight").double()
    g_kept = kept.gram_for("model.layers.1.self_attn.k_proj.weight").double()
    scale = g_kept.abs().max()
    assert torch.allclose(g_masked, x_real.T @ x_real / n_real, atol=1e-5 * scale)
    want = (n_real * g_masked + x_pad.T @ x_pad) / (n_real + n_pad)
    assert torch.allclose(g_kept, want, atol=1e-5 * scale)


def test_masked_grams_do_not_depend_on_pad_to(tiny_family, prompts, tmp_path):
    base, _ = tiny_family
    a = collect_grams(base, prompts, tmp_path / "a", device="cpu", dtype="float32", max_tokens=64)
    b = collect_grams(base, prompts, tmp_path / "b", device="cpu", dtype="float32", pad_to=64)
    assert a["n_tokens"] == b["n_tokens"]
    key = "model.layers.2.mlp.down_proj.weight"
    ga, gb = GramStore(tmp_path / "a").gram_for(key), GramStore(tmp_path / "b").gram_for(key)
    assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6 * float(ga.abs().max()))


def test_pad_to_truncates_and_conflicting_max_tokens_is_refused(tiny_family, prompts, tmp_path):
    base, _ = tiny_family
    meta = collect_grams(base, prompts, tmp_path / "s", device="cpu", padding="kept", pad_to=8)
    assert meta["n_positions"] == 8 * len(PROMPTS) and meta["n_tokens"] < meta["n_positions"]
    assert meta["max_tokens"] == 8 and meta["recipe"]["max_tokens"] == 8
    with pytest.raises(MergeInputError, match="--pad-to 8 pads and truncates.*--max-tokens 16"):
        collect_grams(base, prompts, tmp_path / "t", device="cpu", pad_to=8, max_tokens=16)
    with pytest.raises(MergeInputError, match="unknown padding 'none'"):
        collect_grams(base, prompts, tmp_path / "t", device="cpu", padding="none")
    assert not (tmp_path / "t").exists()


def test_generation_prompt_changes_the_rendered_text(tiny_family, prompts, tmp_path):
    _, experts = tiny_family
    code = experts[1]  # ChatML: the generation prompt is "<|im_start|>assistant\n"
    tok = AutoTokenizer.from_pretrained(code)
    rows = [{"prompt": "hello"}]
    on = render(rows, tok, tok.chat_template)[0]
    off = render(rows, tok, tok.chat_template, generation_prompt=False)[0]
    assert on == off + "<|im_start|>assistant\n"
    a = collect_grams(code, prompts, tmp_path / "on", device="cpu")
    b = collect_grams(code, prompts, tmp_path / "off", device="cpu", generation_prompt=False)
    suffix = len(tok("<|im_start|>assistant\n", add_special_tokens=False).input_ids)
    assert a["n_tokens"] - b["n_tokens"] == suffix * len(PROMPTS)
    assert a["recipe"]["generation_prompt"] is True and b["recipe"]["generation_prompt"] is False


def fake_dataset(monkeypatch, n=10):
    import datasets

    rows = [{"prompt": f"question {i}?", "other": i} for i in range(n)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    monkeypatch.setattr("merges.hub.resolve_commit", lambda repo, revision, kind: "c" * 40)


def test_download_prompts_select_first_or_sampled_with_sidecar(monkeypatch, tmp_path):
    fake_dataset(monkeypatch)
    first, sampled = tmp_path / "first.jsonl", tmp_path / "sampled.jsonl"
    assert download_prompts("org/ds", "abc", first, 4, select="first") == 4
    assert download_prompts("org/ds", "abc", sampled, 4, seed=3) == 4
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    assert [r["source"]["index"] for r in read(first)] == [0, 1, 2, 3]
    assert [r["prompt"] for r in read(first)] == [f"question {i}?" for i in range(4)]
    idx = [r["source"]["index"] for r in read(sampled)]
    assert idx == sorted(idx) and idx != [0, 1, 2, 3]
    side = json.loads(prompts_sidecar(first).read_text())
    assert side["select"] == "first" and side["seed"] is None and side["column"] == "prompt"
    assert (side["revision"], side["commit"]) == ("abc", "c" * 40)
    assert json.loads(prompts_sidecar(sampled).read_text())["seed"] == 3
    with pytest.raises(MergeInputError, match="no 'messages' column"):
        download_prompts("org/ds", "abc", tmp_path / "m.jsonl", 4, column="messages")


def test_recipe_recorded_in_stats_json_and_merge_json(tiny_family, monkeypatch, tmp_path, capsys):
    base, experts = tiny_family
    fake_dataset(monkeypatch)
    prompts = tmp_path / "p.jsonl"
    download_prompts("org/ds", "abc", prompts, 6, select="first", column="prompt")
    argv = [
        "stats", "--model", base, "--prompts", prompts, "--output", tmp_path / "s",
        "--chat-template-from", experts[0], "--no-generation-prompt", "--padding", "kept",
        "--pad-to", "16", "--device", "cpu", "--max-prompts", "5",
    ]  # fmt: skip
    assert merges_main([str(a) for a in argv]) == 0
    meta = json.loads((tmp_path / "s" / "stats.json").read_text())
    recipe = meta["recipe"]
    assert recipe["model"]["path"] == str(base.resolve())
    assert recipe["template_from"] == str(experts[0].resolve())
    assert recipe["generation_prompt"] is False
    assert (recipe["padding"], recipe["pad_to"], recipe["max_tokens"]) == ("kept", 16, 16)
    assert recipe["max_prompts"] == 5 and recipe["batch_size"] == 8
    assert recipe["prompts"]["path"] == str(prompts.resolve())
    assert recipe["prompts"]["sha256"] == json.loads(prompts_sidecar(prompts).read_text())["sha256"]
    assert recipe["selection"]["select"] == "first" and recipe["selection"]["dataset"] == "org/ds"
    assert meta["padding_masked"] is False and meta["n_positions"] == 5 * 16

    # the recipe travels into merge.json with the statistics
    out = tmp_path / "merged"
    argv = ["run", "--method", "regmean", "--base", base, "--output", out, "--device", "cpu"]
    argv += [a for e in experts for a in ("--expert", e)]
    argv += [a for _ in experts for a in ("--stats", tmp_path / "s")]
    argv += ["--param", "solver=fp32_pinv", "--param", "alpha=1", "--quiet"]
    assert merges_main([str(a) for a in argv]) == 0
    record = json.loads((out / "merge.json").read_text())
    assert [s["recipe"] for s in record["stats"]] == [recipe] * 3
    assert record["params"] == {"alpha": 1.0, "solver": "fp32_pinv"}

    # an edited prompts file no longer matches its sidecar: the selection is not claimed
    prompts.write_text(prompts.read_text().replace("question 0", "question zero"))
    meta = collect_grams(base, prompts, tmp_path / "s2", device="cpu", max_prompts=2)
    assert (
        meta["recipe"]["selection"] is None and "does not match" in meta["recipe"]["selection_note"]
    )
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "hi"}\n')
    meta = collect_grams(base, plain, tmp_path / "s3", device="cpu")
    assert meta["recipe"]["selection"] is None and meta["recipe"]["padding"] == "masked"
    assert meta["recipe"]["generation_prompt"] is None  # the base has no chat template
    assert Path(meta["recipe"]["prompts"]["path"]) == plain.resolve()
