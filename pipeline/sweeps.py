"""Parameter sweeps of a run config's merges: a grid, or a seeded random subset of it, expanded into
points, each an ordinary merge with its own readable id and its parameters checked at plan time.

    sweeps:
      task_arithmetic: {grid: {scale: [0.2, 0.4, 0.6, 0.8, 1.0]}}
      ties: {grid: {density: [0.1, 0.2, 0.4], scale: [0.8, 1.0]}, sample: {n: 4, seed: 0}}
      linear: {grid: {weight.if: [1.0, 2.0]}}   # a per-expert parameter, one expert's value

A point's id is the merge id and its swept values, `task_arithmetic.scale=0.6` (several:
`ties.density=0.1,scale=0.8`); its params are the merge's own with the swept values put in. A value
outside a parameter's range is one error naming the merge, the parameter and the range.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass

from mergeeval.errors import InputError
from merges.registry import get_method
from pipeline.config import main_experts

BOUNDS = (("exclusiveMinimum", "<"), ("minimum", "≤"))
UPPER = (("exclusiveMaximum", "<"), ("maximum", "≤"))


class SweepError(InputError):
    """A sweep that cannot be expanded: names the config key and the fix."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config error at {key}: {message}")


@dataclass(frozen=True)
class Point:
    merge: str  # the swept merge id
    id: str  # the point's merge id: MERGE.KEY=VALUE[,KEY=VALUE...]
    values: tuple[tuple[str, object], ...]  # the swept (key, value) pairs, in grid order
    params: dict  # the merge's params with the swept values put in


def fmt(value) -> str:
    """A value as it appears in a point id: shortest round-trip form, `true`/`false` for booleans."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def valid_range(method, key: str) -> str:
    """A parameter's valid values in words, from its pydantic schema: `0 < density ≤ 1`."""
    prop = method.params.model_json_schema()["properties"][key]
    node = next((n for n in prop.get("anyOf", []) if n.get("type") != "array"), prop)
    if "enum" in node:
        return "one of " + ", ".join(map(repr, node["enum"]))
    low = next((f"{node[k]} {op} " for k, op in BOUNDS if k in node), "")
    high = next((f" {op} {node[k]}" for k, op in UPPER if k in node), "")
    return f"{low}{key}{high}" if low or high else f"any {node.get('type', 'value')}"


def _put(params: dict, key: str, value, experts: list[str]) -> dict:
    """`params` with `key` (or `key.EXPERT`, one expert's value of a per-expert parameter) set."""
    name, _, expert = key.partition(".")
    out = copy.deepcopy(params)
    if expert:
        current = out.get(name)
        if not isinstance(current, dict):
            current = {e: current for e in experts} if current is not None else {}
        out[name] = current | {expert: value}
    else:
        out[name] = value
    return out


def expand(config: dict) -> dict[str, list[Point]]:
    """{merge id: its points, in grid order} for every sweep of a run config (merges checked)."""
    sweeps = config.get("sweeps") or {}
    out = {}
    for mid, sweep in sweeps.items():
        where = f"sweeps.{mid}"
        merge = config["merges"].get(mid)
        if merge is None:
            raise SweepError(where, f"no merge {mid!r} in merges; sweep one of: "
                             f"{', '.join(config['merges']) or 'none'}")  # fmt: skip
        if "method" not in merge:
            raise SweepError(where, f"merge {mid!r} is a mergekit config; sweep a method entry")
        method = get_method(merge["method"])
        experts = merge.get("experts") or main_experts(config["models"])
        grid = sweep["grid"]
        for key, values in grid.items():
            name, _, expert = key.partition(".")
            if name not in method.params.model_fields:
                raise SweepError(f"{where}.grid.{key}", f"method {method.name!r} has no parameter "
                                 f"{name!r}; its parameters: {', '.join(method.params.model_fields)}")  # fmt: skip
            if expert and name not in method.per_expert_keys():
                raise SweepError(f"{where}.grid.{key}",
                                 f"{name!r} is one value for all experts; sweep it as {name!r}")  # fmt: skip
            if expert and expert not in experts:
                raise SweepError(f"{where}.grid.{key}",
                                 f"merge {mid!r} has no expert {expert!r}: {', '.join(experts)}")  # fmt: skip
            for v in values:
                try:
                    method.parse_params(_put(merge.get("params", {}), key, v, experts), experts)
                except InputError:
                    raise SweepError(
                        f"{where}.grid.{key}",
                        f"{v!r} is outside the range of {name!r} of method {method.name!r}: "
                        f"{valid_range(method, name)}",
                    ) from None
        combos = list(itertools.product(*grid.values()))
        sample = sweep.get("sample")
        if sample:
            n = min(sample["n"], len(combos))
            picked = set(random.Random(sample.get("seed", 0)).sample(range(len(combos)), n))
            combos = [c for i, c in enumerate(combos) if i in picked]
        points = []
        for combo in combos:
            params = merge.get("params", {})
            for key, v in zip(grid, combo, strict=True):
                params = _put(params, key, v, experts)
            values = tuple(zip(grid, combo, strict=True))
            pid = f"{mid}." + ",".join(f"{k}={fmt(v)}" for k, v in values)
            points.append(Point(mid, pid, values, params))
        out[mid] = points
    return out
