import torch
from pydantic import Field

from merges.registry import Params, TensorTask, register


class NearswapParams(Params):
    t: float = Field(
        1e-4, ge=0, description="similarity threshold: entries closer than t move fully"
    )


@register("nearswap", NearswapParams, matrix_only=False, elementwise=True, n_experts=(1, 1))
def nearswap(task: TensorTask, p: NearswapParams):
    """NearSwap (mergekit `nearswap`; QuartetAnemoi model card): w = clamp(t / max(|Δ|, 1e-6), 0, 1),
    W* = w W_1 + (1 − w) W_0, i.e. Δ* = w Δ: entries where the expert is near the base take it."""
    d = task.deltas[0]
    return torch.clamp(p.t / d.abs().clamp(min=1e-6), 0, 1) * d
