"""The factor merge (`on: factors`) the task-vector methods share with PEFT.

`on: factors` is PEFT's `add_weighted_adapter` without svd (`linear`, `ties`, `dare_linear`,
`dare_ties`, `magnitude_prune`): when every expert of a tensor is a LoRA adapter with
Δ_t = B_t A_t (the engine's factored path; B_t carries the LoRA scale s_t), the method's rule is
applied to the stacked left factors B_t and, separately, to the stacked right factors A_t, with
the weights split as √|w_t| on B_t and sign(w_t)·√|w_t| on A_t, and Δ* = B*·A*. This equals
PEFT's merged adapter (its factors weighted by √|w_t s_t|, its B·A at scale 1) when the adapters
share one LoRA scale s (PEFT's non-svd types require one rank; equal lora_alpha then gives one s),
and, with a negative weight, when the tensor is not transposed (PEFT signs its lora_A, which for
embeddings and fan_in_fan_out layers is the left factor here).
"""

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from merges.errors import MergeInputError
from merges.registry import FactoredTask, TensorTask

On = Literal["delta", "factors"]


def on_field():
    """The `on` parameter of the methods PEFT's add_weighted_adapter also has."""
    return Field(
        "delta",
        description="delta: merge the task vectors ΔW_t (the paper's); factors: PEFT's "
        "add_weighted_adapter without svd, the rule applied to the stacked LoRA factors B_t and "
        "A_t separately, Δ* = B*·A* (every expert a LoRA adapter of one rank)",
    )


def factors_only(task: TensorTask, method: str) -> torch.Tensor:
    """The dense path under `on: factors`: 0 where every Δ_t is 0 (no expert adapts the tensor;
    PEFT leaves it as it is), else an error, since the factors are not there to merge."""
    if not bool(task.deltas.any()):
        return torch.zeros_like(task.deltas[0])
    raise MergeInputError(
        f"{method} with on=factors needs every expert to be a LoRA adapter of {task.name} (it "
        "merges the LoRA factors, as PEFT's add_weighted_adapter without svd); here an expert is "
        "a full checkpoint, saves the tensor whole (modules_to_save) or does not adapt it. "
        "Use on: delta, or adapters that all adapt the tensor"
    )


def normalized(weights: list[float], normalize: bool) -> list[float]:
    """w_t ÷ Σ_t w_t with normalize (a sum below 1e-8 in magnitude counts as 1, as mergekit)."""
    total = sum(weights)
    if not normalize or abs(total) < 1e-8:
        return list(weights)
    return [w / total for w in weights]


def weighted_sum(stack: torch.Tensor, coeffs: list[float]) -> torch.Tensor:
    """Σ_t c_t x_t over a stack [T, ...] (PEFT's merge_utils.task_arithmetic)."""
    out = torch.zeros_like(stack[0])
    for x, c in zip(stack, coeffs, strict=True):
        out.add_(x, alpha=c)
    return out


# combine(stack [T, ...], coefficients c_t, "left" | "right") -> the merged factor; it may
# overwrite the stack (sparsifying it in place, so that its nonzeros can be recorded)
Combine = Callable[[torch.Tensor, list[float], str], torch.Tensor]


def merge_factors(
    task: FactoredTask, method: str, weights: list[float], combine: Combine, record: bool = False
) -> torch.Tensor:
    """B*·A* with B* = combine(B_1..B_T, √|w_t|) and A* = combine(A_1..A_T, sign(w_t)·√|w_t|)
    (PEFT's `_generalized_task_arithmetic_weighted_adapter`); with `record`, merge.json's
    `nonzero_frac` is each expert's kept share of its factors' entries."""
    ranks = [a.shape[0] for _, a in task.factors]
    if len(set(ranks)) != 1:
        raise MergeInputError(
            f"{method} with on=factors stacks the experts' LoRA factors, so they need one rank; "
            f"{task.name} has ranks {ranks} (PEFT's add_weighted_adapter refuses them too). "
            "Use on: delta"
        )
    root = [math.sqrt(abs(w)) for w in weights]
    left = torch.stack([b for b, _ in task.factors])
    right = torch.stack([a for _, a in task.factors])
    b = combine(left, root, "left")
    a = combine(right, [math.copysign(r, w) for r, w in zip(root, weights, strict=True)], "right")
    if record:
        size = left[0].numel() + right[0].numel()
        task.info["nonzero_frac"] = [
            (int(torch.count_nonzero(x)) + int(torch.count_nonzero(y))) / size
            for x, y in zip(left, right, strict=True)
        ]
    return b @ a
