"""merge.json: what a merged folder was made from, how, and what the merge kept."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from mergeeval.records import (
    MERGE_JSON,
    MERGE_PACKAGES,
    SOURCE_JSON,
    file_identity,
    model_identity,
    versions,
)
from merges.deps import code_record
from merges.policy import describe
from merges.spec import expert_names

__all__ = ["MERGE_JSON", "SOURCE_JSON", "merge_record", "model_identity", "versions"]


def merge_record(
    spec,
    method,
    params,
    device,
    tok_src,
    grams,
    timings,
    diagnostics,
    total_s,
    generation_config: Path | None = None,
    adapters: list[dict | None] | None = None,
    output: dict | None = None,
) -> dict:
    """merge.json. Each `stats` entry is that folder's stats.json (its `recipe` included) plus its
    path; `generation_config` names the choice and the file copied (null: none was); an expert
    that is a PEFT adapter carries `adapter` (type, ranks, scales, modules it touches)."""
    adapters = adapters or [None] * len(spec.experts)
    rounding = [d["bf16_lost_frac"] for d in diagnostics.values() if d.get("role") == "method"]
    return {
        "method": method.name,
        "params": params.model_dump(),
        "method_source_sha256": method.source_hash(),
        "code": code_record(method.fn.__module__),
        "base": model_identity(spec.base),
        "experts": [
            model_identity(e) | ({"adapter": a} if a else {})
            for e, a in zip(spec.experts, adapters, strict=True)
        ],
        "expert_names": expert_names(spec),
        "stats": [
            g.meta | {"path": str(Path(s).resolve())}
            for g, s in zip(grams, spec.stats, strict=True)
        ]
        if grams
        else [],
        "tokenizer_from": model_identity(tok_src),
        "config_from": str(Path(spec.base).resolve()),
        "recipe": spec.recipe,
        "generation_config": {
            "from": spec.generation_config_from,
            "file": file_identity(generation_config) if generation_config else None,
        },
        "spec_file": file_identity(spec.spec_file) if spec.spec_file else None,
        "tensor_policy": {
            "rest_policy": spec.rest_policy,
            "method_applies_to": describe(method, spec.rest_policy),
            "roles": dict(sorted(Counter(d["role"] for d in diagnostics.values()).items())),
            "whole_tensors": sorted(
                n for n, d in diagnostics.items() if d.get("processed") == "whole"
            ),
        },
        "dtype": spec.dtype,
        "output": output or {"format": "model"},
        "factor_dtype": spec.factor_dtype,
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "tf32": False,
        "versions": versions(*MERGE_PACKAGES),
        "timings": {"total_s": round(total_s, 3), "per_tensor_s": timings},
        "summary": {
            "tensors": len(diagnostics),
            "method_tensors": len(rounding),
            "max_bf16_lost_frac": max(rounding, default=0.0),
        },
        "diagnostics": diagnostics,
    }
