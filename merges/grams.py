"""RegMean input-Gram keys and storage: one Gram per distinct Linear input of each block.

q/k/v read the same input (`attn_in`), gate/up the same (`mlp_in`); o_proj reads `o_in`,
down_proj `down_in`. Keys look like `model.layers.3.attn_in`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mergeeval.records import STATS_JSON
from merges.errors import MergeInputError
from merges.io import TensorStore

INPUT_GROUPS = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "down_in",
}
_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")
# `merges stats --padding`: masked leaves padding positions out of the Grams; kept counts them as
# tokens (the ACTMat authors' covariance script pads to 256 and does not mask).
PADDING_MODES = ("masked", "kept")


def gram_key(module: str) -> str:
    """Gram key of a Linear module name (a weight name without `.weight`)."""
    leaf = module.rpartition(".")[2]
    layer = _LAYER.match(module)
    if leaf in INPUT_GROUPS and layer:
        return f"{layer.group(1)}.{INPUT_GROUPS[leaf]}"
    return module


class GramStore(TensorStore):
    """A statistics folder written by `python -m merges stats`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = self.folder / STATS_JSON
        if not meta.exists():
            raise MergeInputError(
                f"{self.folder} is not a statistics folder (no {STATS_JSON}); "
                "create one with `python -m merges stats`"
            )
        try:
            self.meta = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MergeInputError(
                f"{meta} is not valid JSON ({e}); collect the statistics again"
            ) from None
        if not isinstance(self.meta, dict):
            raise MergeInputError(f"{meta} is not a JSON object; collect the statistics again")
        super().__init__(sorted(self.folder.glob("*.safetensors")))

    def check(self, in_features: dict[str, int]) -> None:
        """Before merging: a finite fp [n, n] Gram for every weight name -> its input width n."""
        needed: dict[str, tuple[int, str]] = {}
        for name, n in in_features.items():
            needed.setdefault(gram_key(name.removesuffix(".weight")), (n, name))
        fix = "collect the statistics again with `python -m merges stats` on a model of this shape"
        for key, (n, name) in needed.items():
            if key not in self.tensors:
                raise MergeInputError(
                    f"statistics folder {self.folder} has no input Gram for {name}; {fix}"
                )
            info = self.tensors[key]
            if info.shape != (n, n) or not info.dtype.is_floating_point:
                raise MergeInputError(
                    f"statistics folder {self.folder}: Gram {key} is {info.dtype}{list(info.shape)}, "
                    f"but {name} needs a float [{n}, {n}]; {fix}"
                )
            if not bool(torch.isfinite(self.read(key)).all()):
                raise MergeInputError(
                    f"statistics folder {self.folder}: Gram {key} holds nan/inf values; {fix}"
                )

    def gram_for(self, weight_name: str) -> torch.Tensor | None:
        key = gram_key(weight_name.removesuffix(".weight"))
        return self.read(key) if key in self.tensors else None
