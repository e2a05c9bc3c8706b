"""Train the family on the CPU: a base pretrained on the generic mix, then one expert per domain
fine-tuned from the base's bf16 weights on its own examples, through its own chat template.

Deterministic for a seed on one machine: seeded data order and initialisation, a fixed thread
count, torch's deterministic algorithms. Weights are trained in fp32 and saved in bf16.
"""

from __future__ import annotations

import math
import random
import time

import torch

from demofamily.recipe import Recipe


def model_config(recipe: Recipe, vocab_size: int, tokenizer):
    from transformers import Olmo3Config

    return Olmo3Config(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.hidden // 64,
        num_key_value_heads=recipe.hidden // 64,
        max_position_embeddings=1024,
        sliding_window=1024,
        layer_types=["sliding_attention"] * (recipe.layers - 1) + ["full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _batch(seqs: list[tuple[list[int], int]], pad: int):
    """Right-padded ids, attention mask and labels (-100 on prompt and padding)."""
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, start) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, start : len(s)] = torch.tensor(s[start:])
        mask[i, : len(s)] = 1
    return ids, mask, labels


def fit(model, sample, steps: int, lr: float, pad: int, seed: int, log, name: str) -> None:
    """AdamW with warmup and cosine decay on the parameters that require gradients (all of a full
    model, an adapter's own); `sample(rng)` returns one batch of (ids, loss start)."""
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    t0, ema = time.perf_counter(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, max(1, steps // 20))
        ids, mask, labels = _batch(sample(rng), pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if step % 100 == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {ema:.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
