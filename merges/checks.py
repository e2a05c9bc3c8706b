"""Everything a merge checks before its output exists: paths, models, statistics, parameters."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mergeeval.outputs import guard_output
from merges import provenance
from merges.adapter import Adapter, is_adapter
from merges.adapter_out import check_settings, default_rank
from merges.errors import MergeInputError
from merges.grams import GramStore
from merges.io import Checkpoint
from merges.policy import REST_POLICIES, tensor_role
from merges.registry import get_method
from merges.spec import FACTOR_DTYPES, OUTPUT_DTYPES, OUTPUT_FORMATS, MergeSpec, expert_names

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def check_compatible(
    base_dir: Path, expert_dirs: list[Path]
) -> tuple[Checkpoint, list[Checkpoint | Adapter]]:
    """Open the base and the experts (checkpoints, or PEFT LoRA adapters of the base) and require
    every checkpoint expert to have exactly the base's names and shapes (an adapter checks its own
    modules against the base)."""
    if is_adapter(base_dir):
        raise MergeInputError(
            f"base {base_dir} is a PEFT adapter; pass the full model it adapts as the base "
            "and the adapter as an expert"
        )
    base = Checkpoint(base_dir)
    experts = [Adapter(e, base) if is_adapter(e) else Checkpoint(e) for e in expert_dirs]
    for path, ck in zip(expert_dirs, experts, strict=True):
        if ck.is_delta:
            continue
        for name in base.names():
            if name not in ck.tensors:
                raise MergeInputError(
                    f"expert {path} has no tensor {name} (present in base {base_dir})"
                )
            if ck.shape(name) != base.shape(name):
                raise MergeInputError(
                    f"tensor {name}: shape {list(ck.shape(name))} in expert {path} "
                    f"but {list(base.shape(name))} in base {base_dir}"
                )
        extra = sorted(set(ck.names()) - set(base.names()))
        if extra:
            raise MergeInputError(f"expert {path} has tensor {extra[0]} that base {base_dir} lacks")
    return base, experts


def check_inputs(spec: MergeSpec):
    """Validate everything before any output exists; return (method, params, base, experts, grams,
    tok_src, adapter rank: the rank an adapter output keeps, None for energy or a model output)."""
    method = get_method(spec.method)
    params = method.parse_params(spec.params, expert_names(spec))
    for key, value, valid in (
        ("dtype", spec.dtype, OUTPUT_DTYPES),
        ("factor dtype", spec.factor_dtype, FACTOR_DTYPES),
        ("rest policy", spec.rest_policy, REST_POLICIES),
        ("output format", spec.output_format, OUTPUT_FORMATS),
    ):
        if value not in valid:
            raise MergeInputError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    if not spec.experts:
        raise MergeInputError("no experts given; pass --expert DIR at least once")
    method.check_expert_count(len(spec.experts))
    tok_src = tokenizer_source(spec)
    guard_output(
        spec.output,
        [("base", spec.base)]
        + [("expert", e) for e in spec.experts]
        + [("statistics folder", s) for s in spec.stats]
        + [("tokenizer source", tok_src)],
        force=spec.force,
        owned_by=(provenance.MERGE_JSON,),
    )
    _check_duplicates(spec)
    base, experts = check_compatible(Path(spec.base), [Path(e) for e in spec.experts])
    read_config(Path(spec.base))
    tokenizer_files(tok_src)
    grams = None
    if method.needs_stats:
        if len(spec.stats) != len(spec.experts):
            raise MergeInputError(
                f"method {method.name!r} needs statistics: pass --stats DIR once per expert, in expert "
                f"order ({len(spec.experts)} expert(s), {len(spec.stats)} --stats given); "
                "create them with `python -m merges stats`"
            )
        grams = [GramStore(s) for s in spec.stats]
        wanted = {
            n: base.shape(n)[1]
            for n in base.names()
            if tensor_role(n, base.shape(n), method, spec.rest_policy) == "method"
        }
        for g in grams:
            g.check(wanted)
    elif spec.stats:
        raise MergeInputError(f"method {method.name!r} takes no statistics; drop --stats")
    return method, params, base, experts, grams, tok_src, _adapter_rank(spec, experts)


def _adapter_rank(spec: MergeSpec, experts) -> int | None:
    """The rank an adapter output keeps: as given, else Σ of the adapter experts' ranks."""
    if spec.output_format != "adapter":
        if spec.adapter_rank is not None or spec.adapter_energy is not None:
            raise MergeInputError(
                "an adapter rank or energy applies only to an adapter output; add "
                "--output-format adapter (output_format: adapter) or drop it"
            )
        return None
    check_settings(spec.adapter_rank, spec.adapter_energy)
    if spec.adapter_energy is not None:
        return None
    rank = spec.adapter_rank or default_rank(experts)
    if rank is None:
        raise MergeInputError(
            "an adapter output of full-model experts needs --adapter-rank R or --adapter-energy E "
            "(the default, the sum of the experts' LoRA ranks, needs every expert to be an adapter)"
        )
    return rank


def tokenizer_source(spec: MergeSpec) -> Path:
    """`tokenizer_from`, else the first expert; an adapter folder without tokenizer files uses
    its base's tokenizer, so then the base."""
    src = Path(spec.tokenizer_from or spec.experts[0])
    if is_adapter(src) and not any(
        (src / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")
    ):
        return Path(spec.base)
    return src


def _check_duplicates(spec: MergeSpec) -> None:
    seen: dict[str, Path] = {}
    for e in spec.experts:
        key = os.path.realpath(e)
        if key in seen and not spec.allow_duplicate_experts:
            raise MergeInputError(
                f"expert {e} is given twice (as {seen[key]} too); drop the repeat, or pass "
                "--allow-duplicate-experts to weight it twice on purpose"
            )
        seen[key] = Path(e)


def read_config(model: Path) -> dict:
    """A model folder's config.json as a dict (one clear error if missing or malformed)."""
    path = Path(model) / "config.json"
    if not path.is_file():
        raise MergeInputError(f"{model} has no config.json; point at a Hugging Face model folder")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MergeInputError(f"{path} is not valid JSON ({e}); download the model again") from None
    if not isinstance(cfg, dict):
        raise MergeInputError(f"{path} is not a JSON object; download the model again")
    return cfg


def tokenizer_files(tok_src: Path) -> list[str]:
    """The tokenizer/chat-template files the tokenizer source has (it must have a tokenizer)."""
    found = [f for f in TOKENIZER_FILES if (Path(tok_src) / f).is_file()]
    if not any(f in found for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise MergeInputError(
            f"tokenizer source {tok_src} has no tokenizer files; pass --tokenizer-from DIR"
        )
    return found
