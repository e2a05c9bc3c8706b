"""PEFT LoRA adapter folders as generation targets, served by vLLM on their base model.

An adapter folder holds `adapter_config.json` and `adapter_model.safetensors`; its base is a full
model folder (the target's `lora_base`, else the config's `base_model_name_or_path` when that is a
local folder). Everything vLLM would reject is an error here, before any engine starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from evals.errors import EvalInputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# files that give an adapter folder a tokenizer of its own (e.g. saved with it by a trainer)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
# vLLM's allowed max_lora_rank values (vllm.config.lora.MaxLoRARanks; tests/test_lora_serving.py)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# PEFT settings vLLM does not serve, each with what it means (the value that is served is falsy)
UNSERVED = {
    "use_dora": "DoRA",
    "lora_bias": "a LoRA bias",
    "use_qalora": "QALoRA",
    "use_bdlora": "block-diagonal LoRA",
    "alora_invocation_tokens": "activated LoRA",
    "layer_replication": "layer replication",
    "trainable_token_indices": "trained token embeddings",
}
# string values of init_lora_weights that leave the base weights as they are (vLLM's list)
SERVED_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def is_adapter(folder: Path) -> bool:
    """A PEFT adapter folder: one with adapter_config.json, or with adapter files and no
    config.json (then reading it names what is missing)."""
    folder = Path(folder)
    return (folder / ADAPTER_CONFIG).exists() or (
        folder.is_dir() and not (folder / "config.json").exists() and any(folder.glob("adapter_*"))
    )


def lora_rank_limit(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(rank)


@dataclass(frozen=True)
class Adapter:
    """A checked LoRA adapter folder and the base model folder it is served on."""

    path: Path
    base: Path
    rank: int  # the largest rank of any module (r and rank_pattern)
    alpha: float
    sha256: str  # of adapter_config.json and the weights

    @property
    def own_tokenizer(self) -> bool:
        return any((self.path / f).exists() for f in TOKENIZER_FILES)

    @property
    def prompt_folder(self) -> Path:
        """The folder whose tokenizer (and, under `paper`, chat template) renders the prompts:
        the adapter's own when it carries tokenizer files (trainers save the template they trained
        with there), else the base's. vLLM decodes with the base's tokenizer either way, so an
        adapter's tokenizer must have the base's vocabulary (checked in `check_vocabulary`)."""
        return self.path if self.own_tokenizer else self.base

    def record(self) -> dict:
        """What the manifest and meta files say about the adapter."""
        from mergeeval.records import model_identity

        return {
            "adapter": str(self.path.resolve()),
            "sha256": self.sha256,
            "base": model_identity(self.base),
            "rank": self.rank,
            "alpha": self.alpha,
            "prompt_folder": str(self.prompt_folder.resolve()),
        }


def read_adapter(folder: Path, base: Path | None = None) -> Adapter:
    """The adapter at `folder` on `base` (default: its base_model_name_or_path, if a local folder);
    one EvalInputError naming the adapter and the fix for anything vLLM would not serve."""
    folder = Path(folder)
    cfg_path = folder / ADAPTER_CONFIG
    if not cfg_path.exists() and (folder / "config.json").exists():
        raise EvalInputError(
            f"{folder} is a full model folder (config.json, no {ADAPTER_CONFIG}); a LoRA base "
            "is given for adapter folders only: drop lora_base (--lora-base)"
        )
    if not cfg_path.exists():
        raise EvalInputError(
            f"adapter folder {folder} has no {ADAPTER_CONFIG}; save the adapter with PEFT's "
            "save_pretrained, or give a full model folder (with config.json)"
        )
    try:
        cfg = json.loads(cfg_path.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise EvalInputError(f"{cfg_path} is not a valid adapter config: {e}") from e
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        other = sorted(p.name for p in folder.glob("adapter_model.*"))
        hint = f" (it has {other[0]}: save with safe_serialization=True)" if other else ""
        raise EvalInputError(f"adapter folder {folder} has no {ADAPTER_WEIGHTS}{hint}")
    if cfg.get("peft_type") != "LORA":
        raise EvalInputError(
            f"adapter {folder} is a {cfg.get('peft_type')!r} adapter; only LoRA adapters "
            "(peft_type LORA) are served: merge it into its base and give the merged folder"
        )
    for key, what in UNSERVED.items():
        if cfg.get(key):
            raise EvalInputError(
                f"adapter {folder} uses {what} ({key}), which vLLM does not serve; merge it into "
                "its base (PEFT's merge_and_unload) and give the merged folder"
            )
    init = cfg.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in SERVED_INITS:
        raise EvalInputError(
            f"adapter {folder} has init_lora_weights={init!r}, which changes the base weights; "
            "convert it to a plain LoRA (PEFT's path_initial_model_for_weight_conversion) or merge it"
        )
    if cfg.get("bias", "none") != "none" or cfg.get("modules_to_save"):
        raise EvalInputError(
            f"adapter {folder} trains biases or whole modules (bias, modules_to_save), which vLLM "
            "does not serve; merge it into its base and give the merged folder"
        )
    ranks = [cfg.get("r"), *(cfg.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        raise EvalInputError(f"adapter {folder}: LoRA ranks must be positive integers, got {ranks}")
    if max(ranks) > LORA_RANKS[-1]:
        raise EvalInputError(
            f"adapter {folder} has rank {max(ranks)}; vLLM serves ranks up to {LORA_RANKS[-1]}: "
            "merge it into its base and give the merged folder"
        )
    base = _base(folder, cfg, base)
    h = hashlib.sha256(cfg_path.read_bytes())
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return Adapter(folder, base, max(ranks), float(cfg.get("lora_alpha", 8)), h.hexdigest())


def _base(folder: Path, cfg: dict, base: Path | None) -> Path:
    named = cfg.get("base_model_name_or_path")
    if base is None:
        if not named or not Path(named).is_dir():
            raise EvalInputError(
                f"adapter {folder} names its base as {named!r}, which is not a local model folder; "
                "give the base model's folder as the target's lora_base (--lora-base DIR)"
            )
        base = Path(named)
    base = Path(base)
    if not (base / "config.json").exists():
        what = "an adapter, not a full model" if (base / ADAPTER_CONFIG).exists() else "no model"
        raise EvalInputError(
            f"the base of adapter {folder}, {base}, is {what} (no config.json); "
            "give the full base model's folder as lora_base (--lora-base DIR)"
        )
    return base


def check_vocabulary(adapter: Adapter, tokenizer, base_tokenizer) -> None:
    """An adapter's own tokenizer must map tokens as the base's does (vLLM decodes with the
    base's and serves no added vocabulary)."""
    if tokenizer.get_vocab() != base_tokenizer.get_vocab():
        raise EvalInputError(
            f"adapter {adapter.path} carries a tokenizer whose vocabulary differs from its base "
            f"{adapter.base}'s; vLLM serves adapters with the base's vocabulary only: remove the "
            "adapter's tokenizer files, or merge it and give the merged folder"
        )
