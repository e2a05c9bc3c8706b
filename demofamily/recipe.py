"""The family's recipe: every size, step count, learning rate and seed, recorded with the weights."""

from __future__ import annotations

import pydantic


class Recipe(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    seed: int = 0
    vocab_size: int = 1024
    hidden: int = 128
    intermediate: int = 384
    layers: int = 4
    threads: int = 2
    batch: int = 32
    base_steps: int = 2500
    base_lr: float = 3e-3
    base_seq: int = 96
    mix_docs: int = 40000
    midtrain_docs: int = 15000
    p_on_format: float = 0.3
    expert_steps: int = 800
    expert_lr: float = 5e-4
    replay: float = 0.25
    n_eval: int = 50
    n_dev: int = 30


class LoraRecipe(pydantic.BaseModel):
    """The adapted experts' recipe (`python -m demofamily build-adapters`): a PEFT LoRA adapter of
    the shipped base per domain, on the data and batches of that domain's full expert."""

    model_config = pydantic.ConfigDict(extra="forbid")
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_steps: int = 300
    lora_lr: float = 1e-2
