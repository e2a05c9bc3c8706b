"""PEFT LoRA adapters of a tiny base, and their full-model equivalents, for tests.

`make_lora_adapter` saves an adapter whose B factors are drawn at random (PEFT initialises B to 0,
which would make ΔW = 0); `merge_into_full` asks PEFT itself to fold an adapter into its base
(`merge_and_unload`) in float64 and saves the result as a full safetensors folder, so a merge of
adapters can be compared with the same merge of full checkpoints whose ΔW is PEFT's own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_lora_adapter(base: Path, output: Path, seed: int, std: float = 0.05, **lora) -> Path:
    """A PEFT LoRA adapter of `base` (LoraConfig(**lora)) with B ~ N(0, std²), seeded (for
    embedding LoRA, which PEFT starts with A = 0, A and B both)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if any(k in name for k in (".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.")):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    peft_model.save_pretrained(output)
    return Path(output)


def merge_into_full(base: Path, adapter: Path, output: Path, dtype=torch.float64) -> Path:
    """PEFT's own W_0 + ΔW (`merge_and_unload`) of `adapter` on `base`, saved in `dtype` with the
    base's config and tokenizer files."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(output, safe_serialization=True)
    for f in TOKENIZER_FILES:
        if (Path(base) / f).is_file():
            shutil.copyfile(Path(base) / f, Path(output) / f)
    return Path(output)


def make_one_layer_base(output: Path, seed: int = 0) -> Path:
    """A one-layer tiny OLMo-3 base (bf16) with the tiny tokenizer: a cheap base for adapters."""
    from transformers import Olmo3ForCausalLM

    from devtools.tiny_family import tiny_config, tiny_tokenizer

    torch.manual_seed(seed)
    model = Olmo3ForCausalLM(tiny_config(layers=1)).to(torch.bfloat16)
    model.save_pretrained(output, safe_serialization=True)
    tiny_tokenizer().save_pretrained(output)
    return Path(output)
