"""A merge written as a PEFT LoRA adapter: each merged Δ* factored back by a truncated SVD.

The engine hands every merged task vector Δ* (float32, in pieces as it is computed) to
`AdapterWriter.put`; when a tensor is complete, a 2-D weight of a transformer block becomes
Δ* ≈ B A with B = U_k √s, A = √s V_kᵀ (k from a rank, or the smallest k keeping a share of
‖Δ*‖²_F), and any other tensor whose Δ* is not zero is saved whole (PEFT's `modules_to_save`).
Every module is padded with zero rank to one rank R with lora_alpha = R (scale 1), so the folder
is a plain LoRA adapter that PEFT and vLLM load unedited. The share of ‖Δ*‖²_F each module keeps is
recorded (`summary()`, in merge.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from merges.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PREFIX
from merges.errors import MergeInputError

WEIGHT = ".weight"


class AdapterWriter:
    """Collects Δ* per tensor and writes `adapter_model.safetensors` + `adapter_config.json`.

    modules: the base tensors to factor (2-D block weights); tracked: every tensor whose Δ* may be
    non-zero (the rest of the plan is the base's). rank or energy (one of them) sets k.
    """

    def __init__(
        self,
        folder: Path,
        plan: list[tuple[str, torch.dtype, tuple[int, ...]]],
        modules: set[str],
        tracked: set[str],
        out_dtype: torch.dtype,
        base_name: str,
        rank: int | None = None,
        energy: float | None = None,
    ):
        if (rank is None) == (energy is None):
            raise MergeInputError("an adapter output needs exactly one of a rank or an energy")
        self.folder, self.out_dtype, self.base_name = Path(folder), out_dtype, base_name
        self.rank, self.energy = rank, energy
        self.order = [name for name, _, _ in plan]
        self.shapes = {name: shape for name, _, shape in plan}
        self.modules, self.tracked = modules, tracked
        self._buffers: dict[str, torch.Tensor] = {}
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._full: dict[str, torch.Tensor] = {}
        self.kept: dict[str, dict] = {}

    def start(self, name: str) -> None:
        """Allocate Δ*'s buffer for a tracked tensor before its first piece arrives."""
        if name in self.tracked and name not in self._buffers:
            self._buffers[name] = torch.zeros(self.shapes[name], dtype=torch.float32)

    def put(self, name: str, at: int, merged: torch.Tensor) -> None:
        """Entries at..at+len of Δ* (flat), from any merging thread (disjoint pieces)."""
        if name in self._buffers:
            flat = self._buffers[name].view(-1)
            flat[at : at + merged.numel()].copy_(merged.reshape(-1))

    def write(self, name: str, out: torch.Tensor) -> None:
        """The engine's write of W_0 + Δ* (not stored); a complete tracked tensor is factored."""

    def finish(self, name: str, base) -> None:
        """Δ* of `name` is complete: factor it (a module) or keep W_0 + Δ* whole (another tensor
        whose Δ* is not zero; W_0 read from the base store `base`)."""
        delta = self._buffers.pop(name, None)
        if delta is None:
            return
        if name in self.modules:
            self._factor(name, delta)
        elif bool(delta.any()):
            self._full[name] = (base.read(name).float() + delta).to(self.out_dtype)

    def _factor(self, name: str, delta: torch.Tensor) -> None:
        d = delta.to(torch.float64)
        total = float(d.square().sum())
        u, s, vh = torch.linalg.svd(d, full_matrices=False)  # fp64, exact (no Gram route)
        keep = int((s > max(d.shape) * torch.finfo(torch.float32).eps * s[0]).sum()) if total else 0
        u, s, v = u[:, :keep], s[:keep], vh[:keep].T  # the numerical rank of fp32 data
        energy = torch.cumsum(s.square(), 0)
        if self.rank is not None:
            k = min(self.rank, s.numel())
        else:
            need = self.energy * total * (1 - 1e-12)
            k = int(torch.searchsorted(energy, torch.tensor(need, dtype=energy.dtype))) + 1
            k = min(k, s.numel())
        root = s[:k].sqrt()
        self._factors[name] = ((u[:, :k] * root), (v[:, :k] * root).T)
        kept = float(energy[k - 1]) / total if k and total else 1.0
        self.kept[name] = {"rank": k, "kept_energy": min(kept, 1.0), "numerical_rank": s.numel()}

    def close(self) -> None:
        """Write the adapter: factors padded to one rank R (alpha R: scale 1), full tensors whole."""
        r = max([b.shape[1] for b, _ in self._factors.values()] + [1])
        if self.rank is not None:
            r = max(r, 1)
        tensors = {}
        for name, (b, a) in sorted(self._factors.items()):
            module = name.removesuffix(WEIGHT)
            pad = r - b.shape[1]
            b = torch.nn.functional.pad(b, (0, pad))
            a = torch.nn.functional.pad(a, (0, 0, 0, pad))
            tensors[f"{PREFIX}{module}.lora_A.weight"] = a.to(self.out_dtype).contiguous()
            tensors[f"{PREFIX}{module}.lora_B.weight"] = b.to(self.out_dtype).contiguous()
        for name, w in sorted(self._full.items()):
            tensors[f"{PREFIX}{name}"] = w.contiguous()
        save_file(tensors, self.folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base_name,
            "r": r,
            "lora_alpha": r,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "target_modules": sorted({n.removesuffix(WEIGHT) for n in self._factors}),
            "modules_to_save": sorted({n.removesuffix(WEIGHT) for n in self._full}) or None,
            "rank_pattern": {},
            "alpha_pattern": {},
            "init_lora_weights": True,
            "inference_mode": True,
        }
        (self.folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        self.r = r

    def summary(self) -> dict:
        """merge.json's `output` record: the rank written and the share of ‖Δ*‖²_F each module kept."""
        shares = [v["kept_energy"] for v in self.kept.values()]
        return {
            "format": "adapter",
            "rank": self.r,
            "requested": {"rank": self.rank, "energy": self.energy},
            "min_kept_energy": min(shares, default=1.0),
            "full_tensors": sorted(self._full),
            "modules": dict(sorted(self.kept.items())),
        }


def default_rank(experts) -> int | None:
    """Σ_t max rank of expert t when every expert is an adapter: exact for linear merges of LoRA
    experts (rank Δ* ≤ Σ r_t); None otherwise."""
    if not experts or not all(e.is_delta for e in experts):
        return None
    return sum(max((m.rank for m in e.modules.values()), default=0) for e in experts) or None


def check_settings(rank: int | None, energy: float | None) -> None:
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise MergeInputError(f"adapter rank must be a positive integer, got {rank!r}")
    if energy is not None and not (0 < energy <= 1 and math.isfinite(energy)):
        raise MergeInputError(f"adapter energy must be in (0, 1], got {energy!r}")
    if rank is not None and energy is not None:
        raise MergeInputError("give an adapter rank or an adapter energy, not both")
