"""RegMean statistics: per-layer input Grams G = XᵀX / N of a model over prompts.

Runs the model with transformers; a forward pre-hook on each Linear of the blocks reads its
input, drops padding positions (attention mask), and accumulates xᵀx in fp32 (TF32 off).
Linears that share an input (q/k/v; gate/up) share one Gram (`merges.grams.gram_key`).
Grams are per-token averages, written as fp32 safetensors, one file per layer, plus stats.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from mergeeval.outputs import atomic_dir, guard_output
from merges.device import resolve_device
from merges.errors import MergeInputError
from merges.grams import STATS_JSON, gram_key
from merges.provenance import model_identity, versions


def read_prompts(path: Path, limit: int | None) -> list[dict]:
    """JSONL lines with a `prompt` string or a `messages` list of {role, content}."""
    if not path.exists():
        raise MergeInputError(f"prompts file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MergeInputError(
            f"{path} is not UTF-8 text ({e}); save the prompts as UTF-8 JSONL"
        ) from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MergeInputError(f"{path}:{i}: not JSON ({e})") from None
        if not isinstance(row, dict) or not _prompt_text(row):
            raise MergeInputError(
                f"{path}:{i}: expected an object with a non-empty 'prompt' string or a 'messages' "
                "list of {role, content} objects with non-empty content"
            )
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise MergeInputError(f"{path} holds no prompts")
    return rows


def _prompt_text(row: dict) -> bool:
    if isinstance(row.get("prompt"), str):
        return bool(row["prompt"].strip())
    messages = row.get("messages")
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
        and any(m["content"].strip() for m in messages)
    )


def render(rows: list[dict], tokenizer, template: str | None) -> list[str]:
    out = []
    for row in rows:
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        if template:
            out.append(
                tokenizer.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=True
                )
            )
        else:
            out.append("\n\n".join(m["content"] for m in messages))
    return out


def collect_grams(
    model: Path,
    prompts: Path,
    output: Path,
    max_tokens: int = 512,
    chat_template_from: Path | None = None,
    max_prompts: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "bfloat16",
    force: bool = False,
) -> dict:
    """Write `output/` with per-layer Gram safetensors and stats.json; return the metadata."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = guard_output(
        Path(output),
        [("model", model), ("prompts file", prompts), ("chat template source", chat_template_from)],
        force=force,
        owned_by=(STATS_JSON,),
    )
    if not (Path(model) / "config.json").exists():
        raise MergeInputError(f"model folder {model} has no config.json")
    if max_tokens < 1 or batch_size < 1 or (max_prompts is not None and max_prompts < 1):
        raise MergeInputError("max_tokens, batch_size and max_prompts must be positive integers")
    rows = read_prompts(Path(prompts), max_prompts)
    dev = resolve_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    template_src = Path(chat_template_from) if chat_template_from else Path(model)
    template = (
        AutoTokenizer.from_pretrained(template_src).chat_template
        if chat_template_from
        else tokenizer.chat_template
    )
    texts = render(rows, tokenizer, template)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(dev).eval()

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = defaultdict(int)
    mask_holder: dict[str, torch.Tensor] = {}
    hooks, seen = [], set()
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Linear) and re.search(r"\.layers\.\d+\.", name):
            key = gram_key(name)
            if key in seen:
                continue  # same input as a Linear already hooked
            seen.add(key)

            def hook(_mod, args, key=key):
                x = args[0][mask_holder["mask"]].float()
                g = x.T @ x
                sums[key] = g if key not in sums else sums[key] + g
                counts[key] += x.shape[0]

            hooks.append(mod.register_forward_pre_hook(hook))
    if not hooks:
        raise MergeInputError(f"{model}: no Linear layers inside '.layers.N.' blocks found")
    n_tokens = 0
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc="grams", unit="batch"):
            enc = tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_tokens,
                add_special_tokens=False,
            )
            enc = {k: v.to(dev) for k, v in enc.items()}
            mask_holder["mask"] = enc["attention_mask"].bool()
            n_tokens += int(enc["attention_mask"].sum())
            net(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    for h in hooks:
        h.remove()

    per_file: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, g in sums.items():
        layer = re.search(r"\.layers\.(\d+)\.", key + ".")
        fname = f"layer-{int(layer.group(1)):03d}.safetensors" if layer else "other.safetensors"
        per_file[fname][key] = (g / counts[key]).float().cpu().contiguous()
    meta = {
        "model": model_identity(model),
        "prompts": {
            "path": str(Path(prompts).resolve()),
            "sha256": hashlib.sha256(Path(prompts).read_bytes()).hexdigest(),
        },
        "chat_template_from": str(template_src.resolve()) if template else None,
        "n_sequences": len(texts),
        "n_tokens": n_tokens,
        "max_tokens": max_tokens,
        "n_grams": len(sums),
        "padding_masked": True,
        "normalisation": "per-token mean of x xᵀ",
        "model_dtype": dtype,
        "device": str(dev),
        "versions": versions(),
    }
    with atomic_dir(output) as tmp:
        for fname, tensors in per_file.items():
            save_file(tensors, tmp / fname, metadata={"format": "pt"})
        (tmp / STATS_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
