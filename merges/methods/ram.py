from pydantic import Field

from merges.registry import Params, TensorTask, register


class RamParams(Params):
    epsilon: float = Field(1e-5, ge=0, description="|Δ_t| above this counts as a change")


def ram_parts(deltas, epsilon: float):
    """(changed mask [T, ...], per-entry count of experts that changed it)."""
    changed = deltas.abs() > epsilon
    return changed, changed.sum(0)


@register("ram", RamParams, matrix_only=False, elementwise=True)
def ram(task: TensorTask, p: RamParams):
    """RAM (Reinforced Agent Merging, arXiv 2601.13572; mergekit `ram`): c = Σ_t [|Δ_t| > ε];
    Δ* = Σ_t [|Δ_t| > ε] Δ_t / max(c, 1): entries changed by one expert keep its delta whole,
    entries changed by several take the mean of the changes."""
    changed, count = ram_parts(task.deltas, p.epsilon)
    return (task.deltas * changed).sum(0) / count.clamp(min=1)
