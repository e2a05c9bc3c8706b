"""The compute device a command runs on: `auto` (CUDA when torch sees one), `cpu` or `cuda`."""

from __future__ import annotations

import torch

from merges.errors import MergeInputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MergeInputError(
            "--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto"
        )
    if device not in DEVICES:
        raise MergeInputError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    return torch.device(device)
