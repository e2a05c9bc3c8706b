"""What one merge is asked to do: the fields `merge.json` records, and the valid choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

OUTPUT_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FACTOR_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class MergeSpec:
    """Everything one merge depends on (all of it is recorded in merge.json)."""

    method: str
    base: Path
    experts: list[Path]
    output: Path
    params: dict = field(default_factory=dict)
    stats: list[Path] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "bfloat16"
    tokenizer_from: Path | None = None
    rest_policy: str = "mean_delta"
    factor_dtype: str = "float64"
    force: bool = False
    allow_duplicate_experts: bool = False
    max_shard_bytes: int = 5 * 1024**3
