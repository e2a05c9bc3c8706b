import zlib
from typing import Literal

import torch
from pydantic import Field

from merges.methods.ties import elect_and_disjoint_mean
from merges.registry import Params, TensorTask, register


class DareParams(Params):
    drop_rate: float = Field(0.5, ge=0, lt=1, description="p: probability of dropping each entry")
    scale: float = Field(0.4, description="λ applied to the combined rescaled deltas")
    seed: int = Field(
        0, ge=0, description="base seed; task t, tensor NAME use seed + 1000·t + crc32(NAME)"
    )
    combine: Literal["sum", "ties"] = Field(
        "sum", description="sum: λΣτ̃_t; ties: λ·TIES elect + disjoint mean of τ̃_t"
    )


def dare_mask(shape, p: float, seed: int) -> torch.Tensor:
    """Bernoulli(1 − p) keep-mask from a CPU generator, so it is identical on every device."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float32) >= p


@register("dare", DareParams, matrix_only=False)
def dare(task: TensorTask, p: DareParams):
    """DARE: τ̃_t = M_t ⊙ τ_t / (1 − p), M_t ~ Bernoulli(1 − p), then sum or TIES (Yu et al. 2024)."""
    for t, d in enumerate(task.deltas):  # in place: the engine is done with the task vectors
        seed = p.seed + 1000 * t + zlib.crc32(task.name.encode())
        mask = dare_mask(d.shape, p.drop_rate, seed).to(d.device)
        d.masked_fill_(~mask, 0).div_(1.0 - p.drop_rate)
        del mask
    rescaled = task.deltas
    merged = rescaled.sum(0) if p.combine == "sum" else elect_and_disjoint_mean(rescaled)
    return merged.mul_(p.scale)
