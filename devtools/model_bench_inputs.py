"""Inputs of the whole-model benchmark: full-width OLMo-3-7B-shaped checkpoints and Grams.

A base and three experts with the real OLMo-3 tensor names, config and widths, bf16, sharded with an
index as on the hub; the experts carry RL-like deltas (a tenth of the entries moved by 1 to 3 bf16
ulps). RegMean's statistics are seeded synthetic Grams. Both are written once per workdir (seeded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from devtools.olmo3_layout import HIDDEN, INTER, VOCAB, layout
from merges.io import ShardedWriter

SHARD_BYTES = 1024**3


def olmo3_config(layers: int) -> dict:
    from transformers import Olmo3Config

    cfg = Olmo3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=65536,
        rope_theta=500000.0,
        rms_norm_eps=1e-6,
        eos_token_id=100257,
        pad_token_id=100277,
        tie_word_embeddings=False,
    ).to_dict()
    cfg["architectures"] = ["Olmo3ForCausalLM"]
    cfg["torch_dtype"] = "bfloat16"
    return cfg


def rl_delta(w0: torch.Tensor, g: torch.Generator, frac: float = 0.1) -> torch.Tensor:
    """w0 with `frac` of its entries moved by ±1..3 bf16 ulps (steps of the bit pattern; entries
    within 3 steps of zero stay, so no step crosses into the NaN patterns)."""
    bits = w0.view(torch.int16).clone()
    flat = bits.view(-1)
    n = flat.numel()
    idx = torch.randperm(n, generator=g)[: int(n * frac)] if n < 2**24 else None
    if idx is None:  # large tensors: a seeded Bernoulli mask, drawn in row blocks
        step = 2**22
        for s in range(0, n, step):
            part = flat[s : s + step]
            mask = torch.rand(part.shape, generator=g) < frac
            k = torch.randint(1, 4, part.shape, generator=g, dtype=torch.int16)
            sign = torch.randint(0, 2, part.shape, generator=g, dtype=torch.int16) * 2 - 1
            part += mask * k * sign * (part.abs() > 3)  # never across zero
    else:
        k = torch.randint(1, 4, idx.shape, generator=g, dtype=torch.int16)
        sign = torch.randint(0, 2, idx.shape, generator=g, dtype=torch.int16) * 2 - 1
        flat[idx] += k * sign * (flat[idx].abs() > 3)
    out = bits.view(torch.bfloat16)
    if not bool(torch.isfinite(out).all()):
        raise RuntimeError("generated a non-finite weight")
    return out


def make_inputs(workdir: Path, layers: int) -> list[Path]:
    """Write (or reuse) base, e1, e2, e3 under `workdir/inputs`; return their folders."""
    from devtools.tiny_family import tiny_tokenizer

    root = workdir / "inputs"
    spec = {"layers": layers, "vocab": VOCAB, "hidden": HIDDEN, "inter": INTER, "version": 1}
    folders = [root / n for n in ("base", "e1", "e2", "e3")]
    marker = root / "inputs.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return folders
    shutil.rmtree(root, ignore_errors=True)
    entries = layout(layers, HIDDEN, INTER, VOCAB)
    writers = []
    for f in folders:
        f.mkdir(parents=True)
        writers.append(ShardedWriter(f, [(n, torch.bfloat16, s) for n, s in entries], SHARD_BYTES))
    shapes = dict(entries)
    for i, name in enumerate(writers[0].order):
        g = torch.Generator().manual_seed(i)
        w0 = (torch.randn(shapes[name], generator=g) * 0.02).to(torch.bfloat16)
        if name.endswith("norm.weight"):
            w0 = torch.ones(shapes[name], dtype=torch.bfloat16) + w0
        writers[0].write(name, w0)
        for w in writers[1:]:
            w.write(name, rl_delta(w0, g))
    cfg = olmo3_config(layers)
    tok = tiny_tokenizer()
    for w, f in zip(writers, folders, strict=True):
        w.close()
        (f / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tok.save_pretrained(f)
    marker.write_text(json.dumps(spec))
    return folders


def make_stats(workdir: Path, layers: int) -> Path:
    """A statistics folder (shared by the three experts) of seeded, well-conditioned input Grams
    G = AᵀA/m + 0.1·I for every Linear input of the blocks, as `merges stats` writes them."""
    from safetensors.torch import save_file

    from merges.grams import STATS_JSON

    folder = workdir / "stats"
    if (folder / STATS_JSON).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for i in range(layers):
        grams = {}
        for key, n in (
            ("attn_in", HIDDEN),
            ("o_in", HIDDEN),
            ("mlp_in", HIDDEN),
            ("down_in", INTER),
        ):
            a = torch.randn(256, n, generator=g)
            grams[f"model.layers.{i}.{key}"] = a.T @ a / 256 + 0.1 * torch.eye(n)
        save_file(grams, folder / f"layer-{i:03d}.safetensors", metadata={"format": "pt"})
    (folder / STATS_JSON).write_text(json.dumps({"synthetic": "merges bench", "layers": layers}))
    return folder
