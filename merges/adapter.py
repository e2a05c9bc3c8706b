"""PEFT LoRA adapters as experts: a folder whose task vector is ΔW = s·B·A, read tensor by tensor.

An `Adapter` answers the engine as a checkpoint does, but with task vectors instead of weights
(`is_delta`): for a LoRA module s·B·A in the base tensor's layout (transposed for `fan_in_fan_out`
and embeddings, as PEFT's `get_delta_weight`), with s = α/r (rsLoRA: α/√r) and r, α from
`rank_pattern` / `alpha_pattern` matched as PEFT matches them; for a full tensor it saves
(`modules_to_save`, trained biases) W_saved − W_0; for every other base tensor 0. `factors(name)`
gives (s·B, A) in the base layout, for methods with an exact low-rank path. Products are formed in
float64 and rounded once to float32, so ΔW does not depend on the CPU's matmul kernels.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from merges.errors import MergeInputError
from merges.io import TensorInfo, TensorStore, read_header, read_tensor

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
# config keys whose non-default values change what the adapter computes beyond s·B·A
UNSUPPORTED = {
    "use_dora": "DoRA (use_dora) rescales W_0 + ΔW per column; only plain LoRA is merged",
    "lora_bias": "a LoRA bias (lora_bias) adds a trained bias to lora_B",
    "layer_replication": "layer_replication changes the base's layer stack",
    "target_parameters": "target_parameters (LoRA on nn.Parameter) is not read",
    "trainable_token_indices": "trainable_token_indices (trainable tokens) is not read",
    "use_qalora": "QALoRA pools its inputs",
    "use_bdlora": "BD-LoRA shards its factors",
}
_LORA_KEY = re.compile(r"^(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?$")


def is_adapter(folder: str | Path) -> bool:
    """Whether a folder is a PEFT adapter (it has adapter_config.json)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def pattern_value(patterns: dict, module: str, default):
    """PEFT's `get_pattern_key`: the first key k with `(.*\\.)?(k)$` matching the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted base tensor: ΔW = scale·B·A, transposed when `transposed`."""

    a: TensorInfo  # [r, in] (embeddings: [r, num_embeddings])
    b: TensorInfo  # [out, r] (embeddings: [dim, r])
    rank: int
    alpha: float
    scale: float
    transposed: bool


class Adapter:
    """A PEFT LoRA adapter folder checked against its base checkpoint `base` (a TensorStore)."""

    is_delta = True

    def __init__(self, folder: str | Path, base: TensorStore):
        self.folder = Path(folder)
        self.base = base
        self.config = _read_config(self.folder)
        cfg = self.config
        weights = self.folder / ADAPTER_WEIGHTS
        if not weights.is_file():
            bin_ = self.folder / "adapter_model.bin"
            hint = (
                f"it has {bin_.name}: save it with safetensors "
                "(save_pretrained(..., safe_serialization=True))"
                if bin_.is_file()
                else "save the adapter with PEFT's save_pretrained"
            )
            raise self._error(f"has no {ADAPTER_WEIGHTS}; {hint}")
        infos, _ = read_header(weights)
        self.rslora = bool(cfg.get("use_rslora", False))
        r0, alpha0 = cfg.get("r"), cfg.get("lora_alpha")
        if not _number(r0) or r0 < 1 or not _number(alpha0):
            raise self._error(f"{ADAPTER_CONFIG} needs a positive integer r and a lora_alpha")
        ranks, alphas = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        pairs: dict[str, dict[str, TensorInfo]] = {}
        self.full: dict[str, TensorInfo] = {}  # base tensor name -> saved full tensor
        for key, info in infos.items():
            if not key.startswith(PREFIX):
                raise self._error(f"tensor {key!r} is not under {PREFIX!r}: not a PEFT LoRA file")
            name = key[len(PREFIX) :]
            if m := _LORA_KEY.match(name):
                pairs.setdefault(m[1], {})[m[2]] = info
            else:  # a LoRA-wrapped layer's own weight is saved under base_layer (embeddings)
                self.full[name.replace(".base_layer.", ".")] = info
        self.modules: dict[str, LoraModule] = {}
        for module, pair in sorted(pairs.items()):
            self.modules[module + ".weight"] = self._module(
                module, pair, ranks, alphas, r0, alpha0, fan_in_fan_out
            )
        self._check_against_base()

    def _error(self, what: str) -> MergeInputError:
        return MergeInputError(f"adapter {self.folder}: {what}")

    def _module(self, module, pair, ranks, alphas, r0, alpha0, fan_in_fan_out) -> LoraModule:
        embedding = "lora_embedding_A" in pair or "lora_embedding_B" in pair
        a_key, b_key = (
            ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
        )
        if a_key not in pair or b_key not in pair:
            raise self._error(f"module {module} has only one of {a_key}, {b_key}")
        a, b = pair[a_key], pair[b_key]
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise self._error(
                f"module {module} has factors of shapes {list(a.shape)} and {list(b.shape)}; "
                "only LoRA on Linear and Embedding layers (2-D factors) is merged"
            )
        rank = pattern_value(ranks, module, r0)
        alpha = pattern_value(alphas, module, alpha0)
        if a.shape[0] != rank or b.shape[1] != rank:
            raise self._error(
                f"module {module}: factors {list(b.shape)}·{list(a.shape)} do not have the rank "
                f"{rank} that {ADAPTER_CONFIG} gives it (r / rank_pattern)"
            )
        scale = alpha / math.sqrt(rank) if self.rslora else alpha / rank
        return LoraModule(a, b, rank, float(alpha), scale, embedding or fan_in_fan_out)

    def _check_against_base(self) -> None:
        for name, mod in self.modules.items():
            if name not in self.base.tensors:
                raise self._error(
                    f"targets module {name.removesuffix('.weight')}, which the base lacks "
                    f"(no tensor {name}); was it trained on another base model?"
                )
            out, inn = mod.b.shape[0], mod.a.shape[1]
            want = (inn, out) if mod.transposed else (out, inn)
            if self.base.shape(name) != want:
                raise self._error(
                    f"module {name.removesuffix('.weight')} has ΔW of shape {list(want)} but the "
                    f"base's {name} is {list(self.base.shape(name))}; was it trained on another "
                    "base model?"
                )
        for name, info in self.full.items():
            if name not in self.base.tensors:
                raise self._error(
                    f"saves tensor {name} (modules_to_save or bias), which the base lacks; "
                    "was it trained on another base model?"
                )
            if info.shape != self.base.shape(name):
                raise self._error(
                    f"saves {name} with shape {list(info.shape)} but the base's is "
                    f"{list(self.base.shape(name))}"
                )

    # the TensorStore interface the engine uses
    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return self.base.tensors

    def names(self) -> list[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def touches(self, name: str) -> bool:
        """Whether ΔW of this tensor can be non-zero."""
        return name in self.modules or name in self.full

    def low_rank(self, name: str) -> bool:
        """Whether ΔW of this tensor is exactly s·B·A (`factors` gives it)."""
        return name in self.modules and name not in self.full

    def nbytes(self, name: str, rows: tuple[int, int] | None = None) -> int:
        """Bytes of `read(name, rows)`: float32 task vectors."""
        shape = self.base.shape(name)
        n_rows = (rows[1] - rows[0]) if rows is not None else (shape[0] if shape else 1)
        return 4 * n_rows * math.prod(shape[1:])

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(s·B, A) in float64 with ΔW = (s·B) @ A in the base tensor's layout; None where ΔW is
        not that alone (no LoRA factors, or a saved full tensor as well)."""
        return self._product_factors(self.modules[name]) if self.low_rank(name) else None

    def _product_factors(self, mod: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
        name = "lora factor"
        a = read_tensor(name, mod.a).to(torch.float64)
        b = read_tensor(name, mod.b).to(torch.float64) * mod.scale
        return (a.T.contiguous(), b.T.contiguous()) if mod.transposed else (b, a)

    def read(
        self, name: str, rows: tuple[int, int] | None = None, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ΔW (rows r0:r1 of it) in float32, in the uint8 buffer `into` if given."""
        shape = self.base.shape(name)
        out_shape = (
            ((rows[1] - rows[0]) if rows is not None else shape[0], *shape[1:]) if shape else ()
        )
        n = math.prod(out_shape)
        out = (
            torch.empty(out_shape, dtype=torch.float32)
            if into is None
            else into[: 4 * n].view(torch.float32).view(out_shape)
        )
        if not self.touches(name):
            return out.zero_()
        delta = torch.zeros(out_shape, dtype=torch.float64)
        if name in self.full:
            saved = read_tensor(name, self.full[name], rows).to(torch.float64)
            delta += saved - self.base.read(name, rows).to(torch.float64)
        if name in self.modules:
            b, a = self._product_factors(self.modules[name])
            delta += (b if rows is None else b[rows[0] : rows[1]]) @ a
        return out.copy_(delta)

    def describe(self) -> dict:
        """What merge.json records of the adapter: its type, ranks, scales and what it touches."""
        scales = sorted({m.scale for m in self.modules.values()})
        ranks = sorted({m.rank for m in self.modules.values()})
        return {
            "peft_type": "LORA",
            "ranks": ranks,
            "scales": scales,
            "use_rslora": self.rslora,
            "lora_modules": len(self.modules),
            "full_tensors": sorted(self.full),
            "base_model_name_or_path": self.config.get("base_model_name_or_path"),
        }


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _read_config(folder: Path) -> dict:
    """adapter_config.json, checked: a LoRA adapter with no option this reader cannot honour."""
    path = folder / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeInputError(f"adapter {folder}: no {ADAPTER_CONFIG}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MergeInputError(
            f"adapter {folder}: {ADAPTER_CONFIG} is not valid JSON ({e})"
        ) from None
    if not isinstance(cfg, dict):
        raise MergeInputError(f"adapter {folder}: {ADAPTER_CONFIG} is not a JSON object")
    kind = cfg.get("peft_type")
    if kind != "LORA":
        raise MergeInputError(
            f"adapter {folder}: PEFT type {kind!r} is not supported; only LoRA adapters "
            "(peft_type LORA) can be merged"
        )
    for key, why in UNSUPPORTED.items():
        if cfg.get(key) not in (None, False, {}, []):
            raise MergeInputError(f"adapter {folder}: {why}; it cannot be merged as s·B·A")
    return cfg
