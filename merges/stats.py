"""RegMean statistics: per-layer input Grams G = XᵀX / N of a model over prompts.

Runs the model with transformers; a forward pre-hook on each Linear of the blocks reads its
input, drops padding positions (attention mask) unless `padding="kept"`, and accumulates xᵀx in
fp32 (TF32 off). Linears that share an input (q/k/v; gate/up) share one Gram
(`merges.grams.gram_key`). Grams are per-position averages (N counts the positions that entered:
the real tokens, plus the pads when kept), written as fp32 safetensors, one file per layer, plus
stats.json, whose `recipe` records every choice that shapes the Grams.

The ACTMat authors' recipe (scripts/olmo/covariance.py): the base model run on every task's
prompts (the first 320 of the `prompt` column), the Math expert's chat template without a
generation prompt, padded to 256 tokens with the pads kept: `--model BASE --chat-template-from
MATH --no-generation-prompt --padding kept --pad-to 256` on `download-prompts --select first
--column prompt --n 320`. (They divide by the number of sequences, not positions; with every
sequence exactly 256 positions long that is the same Gram times 256 for every task, which RegMean's
solution does not depend on.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from mergeeval.chat import render_chat
from mergeeval.outputs import atomic_dir, guard_output
from mergeeval.records import STATS_PACKAGES, model_identity, versions
from merges.adapter import Adapter, is_adapter
from merges.device import resolve_device
from merges.errors import MergeInputError
from merges.grams import PADDING_MODES, STATS_JSON, gram_key
from merges.hub import prompts_sidecar
from merges.io import Checkpoint

log = logging.getLogger("merges")
DEFAULT_MAX_TOKENS = 512


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


def render(
    rows: list[dict], tokenizer, template: str | None, generation_prompt: bool = True
) -> list[str]:
    """Each row as text: its messages (or its prompt as one user message) through `template`
    with `add_generation_prompt=generation_prompt`; without a template, the contents joined."""
    return [
        render_chat(
            tokenizer,
            row.get("messages") or [{"role": "user", "content": row["prompt"]}],
            template or None,
            generation_prompt,
        )
        for row in rows
    ]


def prompts_selection(prompts: Path, sha256: str) -> tuple[dict | None, str | None]:
    """(the selection `download-prompts` recorded in FILE.meta.json, or None; a note why not)."""
    side = prompts_sidecar(prompts)
    if not side.is_file():
        return None, f"no {side.name} beside the prompts file"
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MergeInputError(
            f"{side} is not valid JSON ({e}); download the prompts again or remove it"
        ) from None
    if not isinstance(meta, dict):
        raise MergeInputError(
            f"{side} is not a JSON object; download the prompts again or remove it"
        )
    if meta.get("sha256") != sha256:
        log.warning(
            "%s does not describe %s (sha256 differs); selection not recorded", side, prompts
        )
        return None, f"{side.name} does not match the prompts file (edited after download?)"
    return meta, None


def _token_length(max_tokens: int | None, pad_to: int | None) -> int:
    """Every sequence is truncated to this: --pad-to N when given, else --max-tokens (512)."""
    for name, v in (("max_tokens", max_tokens), ("pad_to", pad_to)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise MergeInputError(f"{name} must be a positive integer, got {v!r}")
    if pad_to is None:
        return DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if max_tokens is not None and max_tokens != pad_to:
        raise MergeInputError(
            f"--pad-to {pad_to} pads and truncates every sequence to {pad_to} tokens; drop "
            f"--max-tokens {max_tokens} or make it {pad_to}"
        )
    return pad_to


def _fold_adapter(net, adapter: Path, base: Path) -> None:
    """W ← W_0 + ΔW for every tensor the adapter touches (ΔW in float32, then the net's dtype)."""
    reader = Adapter(adapter, Checkpoint(base))
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name in reader.names():
            if reader.touches(name) and name in params:
                p = params[name]
                p.copy_((p.float() + reader.read(name)).to(p.dtype))


def collect_grams(
    model: Path,
    prompts: Path,
    output: Path,
    max_tokens: int | None = None,
    chat_template_from: Path | None = None,
    max_prompts: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "bfloat16",
    force: bool = False,
    generation_prompt: bool = True,
    padding: str = "masked",
    pad_to: int | None = None,
    lora_base: Path | None = None,
) -> dict:
    """Write `output/` with per-layer Gram safetensors and stats.json; return the metadata.

    A PEFT LoRA adapter as `model` runs as its base (`lora_base`) with ΔW = s·B·A added to each
    weight (merges.adapter); its tokenizer is the adapter folder's if it has one, else the base's.

    max_tokens: truncation (default 512). pad_to: pad and truncate every sequence to exactly this
    many tokens (default: pad to the longest in the batch). padding: `masked` drops padding
    positions, `kept` counts them as tokens. generation_prompt: `add_generation_prompt` of the
    chat template.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = guard_output(
        Path(output),
        [("model", model), ("prompts file", prompts), ("chat template source", chat_template_from)],
        force=force,
        owned_by=(STATS_JSON,),
    )
    adapter = is_adapter(model)
    if adapter and lora_base is None:
        raise MergeInputError(
            f"{model} is a PEFT adapter: pass its base model folder (--lora-base DIR)"
        )
    if not adapter and lora_base is not None:
        raise MergeInputError(f"--lora-base is for adapters; {model} is not one")
    weights_from = Path(lora_base) if adapter else Path(model)
    if not (weights_from / "config.json").exists():
        raise MergeInputError(f"model folder {weights_from} has no config.json")
    if batch_size < 1 or (max_prompts is not None and max_prompts < 1):
        raise MergeInputError("batch_size and max_prompts must be positive integers")
    if padding not in PADDING_MODES:
        raise MergeInputError(f"unknown padding {padding!r}; valid: {', '.join(PADDING_MODES)}")
    length = _token_length(max_tokens, pad_to)
    rows = read_prompts(Path(prompts), max_prompts)
    prompts_sha = hashlib.sha256(Path(prompts).read_bytes()).hexdigest()
    selection, selection_note = prompts_selection(Path(prompts), prompts_sha)
    dev = resolve_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    tokenizer = AutoTokenizer.from_pretrained(
        model if not adapter or (Path(model) / "tokenizer_config.json").exists() else weights_from
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    template_src = Path(chat_template_from) if chat_template_from else Path(model)
    if is_adapter(template_src) and not (template_src / "tokenizer_config.json").exists():
        template_src = weights_from  # an adapter without tokenizer files: its base's template
    template = (
        AutoTokenizer.from_pretrained(template_src).chat_template
        if chat_template_from
        else tokenizer.chat_template
    )
    if template is not None and not isinstance(template, str):
        raise MergeInputError(
            f"{template_src} has several named chat templates; this command uses a single one"
        )
    texts = render(rows, tokenizer, template, generation_prompt)
    net = AutoModelForCausalLM.from_pretrained(weights_from, dtype=getattr(torch, dtype))
    if adapter:
        _fold_adapter(net, Path(model), weights_from)
    net = net.to(dev).eval()
    masked = padding == "masked"

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
                x = args[0]
                x = (x[mask_holder["mask"]] if masked else x.reshape(-1, x.shape[-1])).float()
                g = x.T @ x
                sums[key] = g if key not in sums else sums[key] + g
                counts[key] += x.shape[0]

            hooks.append(mod.register_forward_pre_hook(hook))
    if not hooks:
        raise MergeInputError(f"{model}: no Linear layers inside '.layers.N.' blocks found")
    n_tokens = n_positions = 0
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), desc="grams", unit="batch"):
            enc = tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding="max_length" if pad_to is not None else True,
                truncation=True,
                max_length=length,
                add_special_tokens=False,
            )
            enc = {k: v.to(dev) for k, v in enc.items()}
            mask_holder["mask"] = enc["attention_mask"].bool()
            n_tokens += int(enc["attention_mask"].sum())
            n_positions += int(enc["attention_mask"].sum()) if masked else enc["input_ids"].numel()
            net(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    for h in hooks:
        h.remove()

    per_file: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, g in sums.items():
        layer = re.search(r"\.layers\.(\d+)\.", key + ".")
        fname = f"layer-{int(layer.group(1)):03d}.safetensors" if layer else "other.safetensors"
        per_file[fname][key] = (g / counts[key]).float().cpu().contiguous()
    prompts_record = {"path": str(Path(prompts).resolve()), "sha256": prompts_sha}
    template_from = str(template_src.resolve()) if template else None
    recipe = {
        "model": model_identity(model)
        | ({"lora_base": model_identity(weights_from)} if adapter else {}),
        "template_from": template_from,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        "generation_prompt": bool(generation_prompt) if template else None,
        "padding": padding,
        "pad_to": pad_to,
        "max_tokens": length,
        "max_prompts": max_prompts,
        "batch_size": batch_size,
        "padding_side": tokenizer.padding_side,
        "pad_token_id": tokenizer.pad_token_id,
        "add_special_tokens": False,
        "prompts": prompts_record,
        "selection": selection,
        **({"selection_note": selection_note} if selection_note else {}),
    }
    meta = {
        "model": recipe["model"],
        "prompts": prompts_record,
        "chat_template_from": template_from,
        "n_sequences": len(texts),
        "n_tokens": n_tokens,
        "n_positions": n_positions,
        "max_tokens": length,
        "n_grams": len(sums),
        "padding_masked": masked,
        "normalisation": "per-token mean of x xᵀ"
        if masked
        else "per-position mean of x xᵀ, padding positions included",
        "model_dtype": dtype,
        "device": str(dev),
        "recipe": recipe,
        "versions": versions(*STATS_PACKAGES),
    }
    with atomic_dir(output) as tmp:
        for fname, tensors in per_file.items():
            save_file(tensors, tmp / fname, metadata={"format": "pt"})
        (tmp / STATS_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
