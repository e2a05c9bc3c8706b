"""Parameter sweeps of a run config's merges: a grid, or a seeded random subset of it, expanded into
points, each an ordinary merge with its own readable id and its parameters checked at plan time.

    sweeps:
      task_arithmetic: {grid: {scale: [0.2, 0.4, 0.6, 0.8, 1.0]}}
      ties: {grid: {density: [0.1, 0.2, 0.4], scale: [0.8, 1.0]}, sample: {n: 4, seed: 0}}
      linear: {grid: {weight.if: [1.0, 2.0]}}   # a per-expert parameter, one expert's value

A point's id is the merge id and its swept values, `task_arithmetic.scale=0.6` (several:
`ties.density=0.1,scale=0.8`); its params are the merge's own with the swept values put in. A value
outside a parameter's range is one error naming the merge, the parameter and the range.

The id names the point's folder, so a value whose text could not be part of one folder name (`/`,
`\\`, a control character, `.`, `..`, or the id's own `,` and `=`) or is listed twice is refused, as
is an id longer than a file name may be. The points are counted before any is built: a sweep of
more than `limits.max_sweep_points` points (its grid's product, or `sample.n`) and a run of more
than `limits.max_merge_jobs` merge jobs are refused at once, with the count; a sample of a large
grid draws its points without listing the grid.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import unicodedata
from dataclasses import dataclass

from mergeeval.errors import InputError
from merges.registry import get_method
from pipeline.config import main_experts
from pipeline.guards import NAME_MAX

BOUNDS = (("exclusiveMinimum", "<"), ("minimum", "≤"))
UPPER = (("exclusiveMaximum", "<"), ("maximum", "≤"))
MAX_SWEEP_POINTS = 200  # the schema's defaults of limits.*, for configs not through the schema
MAX_MERGE_JOBS = 1000


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


def bad_value(value) -> str | None:
    """Why a grid value's text cannot be part of a point id; None when it can."""
    text = fmt(value)
    if text in (".", ".."):
        return f"{text!r} is no folder name"
    odd = [c for c in text if c in "/\\,=" or unicodedata.category(c) in ("Cc", "Cs")]
    if odd:
        return f"it holds {odd[0]!r} (no '/', '\\', ',', '=' or control characters such as NUL or newline)"
    return None


def count_points(config: dict) -> dict[str, int]:
    """{swept merge id: its number of points}, counted without building any, each checked against
    `limits.max_sweep_points`, and the run's merge jobs against `limits.max_merge_jobs`."""
    limits = config.get("limits") or {}
    cap = limits.get("max_sweep_points", MAX_SWEEP_POINTS)
    counts = {}
    for mid, sweep in (config.get("sweeps") or {}).items():
        grid, sample = sweep["grid"], sweep.get("sample")
        product = math.prod(len(v) for v in grid.values())
        n = min(sample["n"], product) if sample else product
        if n > cap:
            sizes = " × ".join(f"{len(v)} {k}" for k, v in grid.items())
            key, what = (
                (f"sweeps.{mid}.sample.n", f"a sample of {n} points")
                if sample
                else (f"sweeps.{mid}.grid", f"{product} points ({sizes})")
            )
            raise SweepError(key, f"{what}; at most {cap} (limits.max_sweep_points sets it)")
        counts[mid] = n
    jobs_cap = limits.get("max_merge_jobs", MAX_MERGE_JOBS)
    unswept = [m for m in config["merges"] if m not in counts]
    jobs = len(unswept) + sum(counts.values())
    if jobs > jobs_cap:
        raise SweepError(
            "sweeps" if counts else "merges",
            f"{jobs} merge jobs ({len(unswept)} merges and {sum(counts.values())} sweep points); "
            f"at most {jobs_cap} (limits.max_merge_jobs sets it)",
        )
    return counts


def _combo(grid: dict, index: int) -> tuple:
    """The grid's point number `index` in itertools.product's order (the last key varies fastest)."""
    out = []
    for values in reversed(list(grid.values())):
        index, i = divmod(index, len(values))
        out.append(values[i])
    return tuple(reversed(out))


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
    counts = count_points(config)  # before anything is built: a huge grid is refused at once
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
            texts = set()
            for v in values:
                reason = bad_value(v)
                if reason or fmt(v) in texts:
                    raise SweepError(
                        f"{where}.grid.{key}",
                        f"{v!r} cannot be part of a point id, which names the point's folder: "
                        + (reason or "it is listed twice (as the same text)"),
                    )
                texts.add(fmt(v))
                try:
                    method.parse_params(_put(merge.get("params", {}), key, v, experts), experts)
                except InputError:
                    raise SweepError(
                        f"{where}.grid.{key}",
                        f"{v!r} is outside the range of {name!r} of method {method.name!r}: "
                        f"{valid_range(method, name)}",
                    ) from None
        longest = len(mid.encode()) + sum(  # MERGE.KEY=VALUE,KEY=VALUE with its longest values
            2 + len(k.encode()) + max(len(fmt(v).encode()) for v in vs) for k, vs in grid.items()
        )
        if longest > NAME_MAX:
            raise SweepError(f"{where}.grid", f"a point id would be {longest} bytes long (the merge "
                             f"id and KEY=VALUE for each key); a file name may have at most "
                             f"{NAME_MAX}: sweep fewer keys or shorter values")  # fmt: skip
        sample = sweep.get("sample")
        if sample:  # drawn by index, in grid order, without listing the grid
            product = math.prod(len(v) for v in grid.values())
            picked = random.Random(sample.get("seed", 0)).sample(range(product), counts[mid])
            combos = [_combo(grid, i) for i in sorted(picked)]
        else:
            combos = list(itertools.product(*grid.values()))
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
