"""RegMean Grams against a closed form: layer 0's q/k/v input is the raw token embedding (post-norm OLMo)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from merges.errors import MergeInputError
from merges.grams import GramStore, gram_key
from merges.stats import collect_grams, read_prompts, render


def test_gram_keys_share_inputs():
    assert (
        gram_key("model.layers.3.self_attn.q_proj")
        == gram_key("model.layers.3.self_attn.v_proj")
        == "model.layers.3.attn_in"
    )
    assert (
        gram_key("model.layers.3.mlp.gate_proj")
        == gram_key("model.layers.3.mlp.up_proj")
        == "model.layers.3.mlp_in"
    )
    assert gram_key("model.layers.3.mlp.down_proj") == "model.layers.3.down_in"
    assert gram_key("lm_head") == "lm_head"


@pytest.mark.parametrize("batch_size", [1, 5])
def test_layer0_gram_is_mean_embedding_outer_product(tiny_family, tmp_path, batch_size):
    _, experts = tiny_family
    model = experts[1]
    prompts = "config/demo_calibration_prompts.jsonl"
    meta = collect_grams(
        model,
        prompts,
        tmp_path / "s",
        max_tokens=40,
        batch_size=batch_size,
        device="cpu",
        dtype="float32",
    )
    tok = AutoTokenizer.from_pretrained(model)
    texts = render(read_prompts(Path(prompts), None), tok, tok.chat_template)
    emb = load_file(model / "model.safetensors")["model.embed_tokens.weight"].double()
    ids = torch.cat([torch.tensor(tok(t, add_special_tokens=False).input_ids[:40]) for t in texts])
    x = emb[ids]
    want = x.T @ x / len(ids)
    store = GramStore(tmp_path / "s")
    got = store.gram_for("model.layers.0.self_attn.k_proj.weight").double()
    assert meta["n_tokens"] == len(ids)  # padding excluded, whatever the batch size
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)
    down = store.gram_for("model.layers.3.mlp.down_proj.weight")
    assert down.shape == (256, 256) and torch.allclose(down, down.T, atol=1e-6)
    assert torch.linalg.eigvalsh(down.double()).min() > -1e-6
    info = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert info["padding_masked"] and info["prompts"]["sha256"]


def test_bad_prompts_file(tiny_family, tmp_path):
    _, experts = tiny_family
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": 3}\n')
    with pytest.raises(MergeInputError, match=r"p.jsonl:2: expected an object"):
        collect_grams(experts[0], bad, tmp_path / "s", device="cpu")
    with pytest.raises(MergeInputError, match="prompts file not found"):
        collect_grams(experts[0], tmp_path / "none.jsonl", tmp_path / "s", device="cpu")
    assert not (tmp_path / "s").exists()
