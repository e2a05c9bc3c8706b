"""`python -m demofamily build-adapters`: the adapted experts, one PEFT LoRA adapter of the shipped
base per domain (`demofamily/models/lora_{math,code,if}`).

Each adapter sees exactly what the full expert of its domain saw: the same training examples
through the same chat template, the same replay share of the generic mix, the same batches in the
same order (the expert's sampler and seed, so `lora_steps` ≤ `expert_steps` sees a prefix of the
expert's batches), starting from the base's bf16 weights in fp32. Only the LoRA factors train (rank
`lora_rank` on every linear layer but the output head, PEFT's `all-linear`); they are saved in
bf16 by PEFT's `save_pretrained` beside the expert's tokenizer and chat-template files (so the
adapter folder renders prompts as that expert does) and a `source.json` with the family's and the
adapters' recipes, the seed, versions, and the sha256 of the base's weights and the adapter's.
Deterministic as the family's build: seeded, a fixed thread count, torch's deterministic algorithms.
The training data is regenerated in memory from the recipe; the base, the full experts and the data
files are never written. `fold` (`python -m demofamily fold-adapter`) folds an adapter into its base
(PEFT's `merge_and_unload`) as a full bf16 model folder, to generate and score it as a model.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import torch

from demofamily.build import (
    DOMAINS,
    ROOT,
    encode,
    expert_sampler,
    expert_seed,
    splits,
    training_text,
)
from demofamily.recipe import LoraRecipe, Recipe
from demofamily.train import fit
from mergeeval.errors import InputError
from mergeeval.records import SOURCE_JSON

MODELS = ROOT / "demofamily" / "models"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# the files an adapter folder takes from its domain's full expert: tokenizer and chat template
EXPERT_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def adapter_name(domain: str) -> str:
    return f"lora_{domain}"


def require_peft():
    try:
        import peft
    except ImportError:
        raise InputError(
            "building the demo's adapters needs PEFT, which is not importable here: "
            "install it into this environment (pip install peft) and run again"
        ) from None
    return peft


def family_recipe(base: Path = MODELS / "base") -> Recipe:
    """The recipe the base (and so its experts' data) was built with, from its source.json."""
    path = Path(base) / SOURCE_JSON
    if not path.is_file():
        raise InputError(f"{path} is missing: the base must be a folder that `build` wrote")
    return Recipe(**json.loads(path.read_text())["recipe"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _portable(path: Path) -> str:
    """A path inside the repository relative to its root (where the CLIs run), others absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def prepare(r: Recipe, tokenizer) -> tuple[list, dict]:
    """(chunks, sft): the generic mix's chunks and each domain's encoded examples, as the family's
    build feeds its experts (the training split alone; no data file is written)."""
    rendered, mix = training_text(r, splits(r))
    return encode(tokenizer, r, rendered, mix)


def lora_config(lora: LoraRecipe):
    peft = require_peft()
    return peft.LoraConfig(
        r=lora.lora_rank,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_adapters(
    output: Path,
    r: Recipe,
    lora: LoraRecipe,
    base: Path = MODELS / "base",
    experts: Path = MODELS,
    domains: tuple[str, ...] = DOMAINS,
    data: tuple[list, dict] | None = None,
    log=print,
) -> list[Path]:
    """Train one adapter of `base` per domain and write `output/lora_{domain}`; return the folders.
    `experts/{domain}` gives each adapter folder its tokenizer and chat-template files; `data`
    (from `prepare`) skips the data preparation."""
    peft = require_peft()
    from transformers import Olmo3ForCausalLM, PreTrainedTokenizerFast

    base, experts, output = Path(base), Path(experts), Path(output)
    for d in domains:
        missing = [f for f in EXPERT_FILES if not (experts / d / f).is_file()]
        if d not in DOMAINS or missing:
            raise InputError(
                f"no {d} expert's tokenizer and template files under {experts / d} "
                f"({', '.join(missing) or 'unknown domain'}); domains are {', '.join(DOMAINS)}"
            )
    torch.manual_seed(r.seed)
    torch.set_num_threads(r.threads)
    torch.use_deterministic_algorithms(True)
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    chunks, sft = data if data is not None else prepare(r, tok)
    base_weights = {f.name: _sha256(f) for f in sorted(base.glob("*.safetensors"))}
    folders = []
    for d in domains:
        seed = expert_seed(r, d)
        model = Olmo3ForCausalLM.from_pretrained(base, dtype=torch.float32)
        torch.manual_seed(seed)  # the factors' initialisation
        model = peft.get_peft_model(model, lora_config(lora))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"{adapter_name(d)}: {trainable} trainable parameters, {len(sft[d])} examples")
        sample = expert_sampler(r, sft[d], chunks)
        fit(model, sample, lora.lora_steps, lora.lora_lr, tok.pad_token_id, seed, log, d)
        source = {
            "source": "demofamily",
            "name": adapter_name(d),
            "adapter_of": {"path": _portable(base), "sha256": base_weights},
            "recipe": r.model_dump(),
            "lora": lora.model_dump(),
            "seed": seed,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "peft": peft.__version__,
            },
        }
        folders.append(_save(output, d, model.to(torch.bfloat16), source, base, experts))
    return folders


def _save(output: Path, domain: str, model, source: dict, base: Path, experts: Path) -> Path:
    """PEFT's adapter files (config with sorted target modules and a portable base path, bf16
    safetensors; no model card), the expert's tokenizer and template files and `source` with the
    adapter's sha256, swapped in whole."""
    folder = output / adapter_name(domain)
    tmp = output / f".{folder.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    config = model.peft_config["default"]
    config.base_model_name_or_path = _portable(base)
    config.target_modules = sorted(config.target_modules)  # a set: its order varies by process
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "README.md").unlink(missing_ok=True)
    for name in EXPERT_FILES:
        shutil.copyfile(experts / domain / name, tmp / name)
    source["sha256"] = {ADAPTER_WEIGHTS: _sha256(tmp / ADAPTER_WEIGHTS)}
    (tmp / SOURCE_JSON).write_text(json.dumps(source, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def fold(adapter: Path, output: Path, base: Path | None = None) -> Path:
    """The adapter folded into its base (PEFT's `merge_and_unload`, in fp32) as a full bf16 model
    folder with the adapter's tokenizer and template files: what the adapter scores as a model."""
    peft = require_peft()
    from transformers import Olmo3ForCausalLM

    adapter, output = Path(adapter), Path(output)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter} is not an adapter folder (no adapter_config.json)")
    if base is None:
        named = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = Path(named) if Path(named).is_absolute() else ROOT / named
    model = Olmo3ForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(torch.bfloat16).save_pretrained(output, safe_serialization=True)
    for name in EXPERT_FILES:
        shutil.copyfile(adapter / name, output / name)
    source = {
        "source": "demofamily",
        "name": f"{adapter.name} folded",
        "adapter": {
            "path": _portable(adapter),
            "sha256": {ADAPTER_WEIGHTS: _sha256(adapter / ADAPTER_WEIGHTS)},
        },
        "sha256": {f.name: _sha256(f) for f in sorted(output.glob("*.safetensors"))},
    }
    (output / SOURCE_JSON).write_text(json.dumps(source, indent=2) + "\n")
    return output
