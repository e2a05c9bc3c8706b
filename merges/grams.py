"""RegMean input-Gram keys and storage: one Gram per distinct Linear input of each block.

q/k/v read the same input (`attn_in`), gate/up the same (`mlp_in`); o_proj reads `o_in`,
down_proj `down_in`. Keys look like `model.layers.3.attn_in`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

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
STATS_JSON = "stats.json"


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
        self.meta = json.loads(meta.read_text())
        super().__init__(sorted(self.folder.glob("*.safetensors")))

    def gram_for(self, weight_name: str) -> torch.Tensor | None:
        key = gram_key(weight_name.removesuffix(".weight"))
        return self.read(key) if key in self.tensors else None
