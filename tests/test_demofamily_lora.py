"""The demo's adapted experts (`python -m demofamily build-adapters`): deterministic LoRA training,
and shipped adapters that match their record and load as PEFT adapters of the shipped base."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from demofamily import build, lora
from demofamily.recipe import LoraRecipe, Recipe
from mergeeval.errors import InputError

MODELS = lora.MODELS
DOMAINS = build.DOMAINS
LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_data(r: Recipe, n_train: int = 40):
    """The family's data pipeline on the first `n_train` training items of each domain."""
    from transformers import PreTrainedTokenizerFast

    parts = {d: s._replace(train=s.train[:n_train]) for d, s in build.splits(r).items()}
    rendered, mix = build.training_text(r, parts)
    tok = PreTrainedTokenizerFast.from_pretrained(MODELS / "base")
    return build.encode(tok, r, rendered, mix)


def test_adapter_training_is_deterministic(tmp_path):
    pytest.importorskip("peft")
    r = lora.family_recipe().model_copy(update={"batch": 4, "mix_docs": 60, "midtrain_docs": 20})
    tiny = LoraRecipe(lora_steps=2)
    data = _tiny_data(r)
    runs = []
    for run in ("a", "b"):
        folders = lora.build_adapters(tmp_path / run, r, tiny, data=data, log=lambda m: None)
        assert [f.name for f in folders] == [f"lora_{d}" for d in DOMAINS]
        files = [p for p in (tmp_path / run).rglob("*") if p.is_file()]
        runs.append({p.relative_to(tmp_path / run): p.read_bytes() for p in files})
    assert runs[0] == runs[1]
    weights = {k: v for k, v in runs[0].items() if k.name == lora.ADAPTER_WEIGHTS}
    assert len(weights) == 3 and len(set(weights.values())) == 3  # trained apart, per domain
    for d in DOMAINS:
        src = json.loads(runs[0][Path(f"lora_{d}", "source.json")])
        assert src["lora"] == tiny.model_dump() and src["seed"] == build.expert_seed(r, d)


def test_shipped_adapters_match_their_record():
    base_src = json.loads((MODELS / "base" / "source.json").read_text())
    for d in DOMAINS:
        folder = MODELS / f"lora_{d}"
        src = json.loads((folder / "source.json").read_text())
        assert src["name"] == f"lora_{d}" and src["seed"] == build.expert_seed(Recipe(), d)
        # the family's recipe as the base recorded it: the data its experts were trained on
        assert src["recipe"] == base_src["recipe"]
        assert src["lora"] == LoraRecipe(**src["lora"]).model_dump()
        assert src["lora"]["lora_rank"] == 8
        assert src["adapter_of"] == {"path": "demofamily/models/base", "sha256": base_src["sha256"]}
        for f, digest in src["sha256"].items():
            assert _sha256(folder / f) == digest, f"{folder.name}/{f}"
        for f in lora.EXPERT_FILES:  # renders prompts as its domain's full expert does
            assert (folder / f).read_bytes() == (MODELS / d / f).read_bytes(), f"{folder.name}/{f}"
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 8
        assert config["base_model_name_or_path"] == "demofamily/models/base"
        assert set(config["target_modules"]) == LINEAR
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["adapter_config.json", lora.ADAPTER_WEIGHTS, "source.json", *lora.EXPERT_FILES]
        )


def test_shipped_adapters_load_on_the_shipped_base():
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file
    from transformers import Olmo3ForCausalLM

    def base():
        return Olmo3ForCausalLM.from_pretrained(MODELS / "base", dtype=torch.float32)

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        plain = base()(input_ids=ids).logits
    for d in DOMAINS:
        folder = MODELS / f"lora_{d}"
        model = peft.PeftModel.from_pretrained(base(), folder, adapter_name=d)
        adapted = {
            n.split(".")[-1]
            for n, m in model.named_modules()
            if isinstance(m, peft.tuners.lora.LoraLayer)
        }
        assert adapted == LINEAR  # every linear layer of every block, not the output head
        saved = load_file(folder / lora.ADAPTER_WEIGHTS)
        state = peft.get_peft_model_state_dict(model, adapter_name=d)
        assert saved.keys() == state.keys()
        assert all(torch.equal(saved[k], state[k].to(saved[k].dtype)) for k in saved)
        assert len(saved) == 2 * len(LINEAR) * model.config.num_hidden_layers
        with torch.no_grad():
            assert not torch.allclose(model(input_ids=ids).logits, plain)


def test_build_adapters_without_peft_is_one_error(monkeypatch, capsys):
    from demofamily.__main__ import main

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(InputError, match="PEFT"):
        lora.require_peft()
    assert main(["build-adapters", "--output", "/nonexistent"]) == 2
    assert "needs PEFT" in capsys.readouterr().err
