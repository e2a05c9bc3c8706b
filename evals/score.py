"""Score one benchmark's sample file against its data: ids checked, scorer run, JSON written.

Ids must have the data's type exactly (AIME and IFEval: integers; HumanEval: strings); every item
needs the same number of completions unless `allow_uneven`; a file that lacks items is scored only
with `subset`, or when its generation recorded a `limit` and it holds exactly the data's first
`limit` items. The result records `complete` (every item of the data scored) and, for HumanEval,
the sandbox mode the candidates ran in (bubblewrap is required unless `allow_unsandboxed`) and
how each sandbox's processes were capped (`sandbox_process_cap`).
`score_batch` scores many files in one process (one start-up, programs checked once).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from evals import sandbox
from evals.data import load_items
from evals.errors import EvalInputError
from evals.registry import CODE_FORMATS, get_benchmark
from evals.samples import meta_path, read_meta, read_samples
from evals.scorers import get_scorer
from mergeeval.outputs import guard_output, write_text_atomic
from mergeeval.records import SCORING_PACKAGES, versions


def _check_ids(benchmark: str, bench_format: str, rows: list[dict], path) -> None:
    want, name = (int, "an integer") if bench_format in ("aime", "ifeval") else (str, "a string")
    for i, row in enumerate(rows, 1):
        if type(row["id"]) is not want:  # no coercion: true, 1.7 and "1" are not item 1
            raise EvalInputError(
                f"{path}: item {i}: id {row['id']!r} is not {name} ({benchmark} ids are "
                f"{want.__name__}s, as in its data); write the ids exactly as the data has them"
            )


def _check_counts(rows: list[dict], path, allow_uneven: bool) -> None:
    counts = {r["id"]: len(r["completions"]) for r in rows}
    if len(set(counts.values())) > 1 and not allow_uneven:
        lo, hi = min(counts, key=counts.get), max(counts, key=counts.get)
        raise EvalInputError(
            f"{path}: items have different numbers of completions ({lo!r}: {counts[lo]}, "
            f"{hi!r}: {counts[hi]}); pass --allow-uneven to score them (pass@k only for k <= "
            f"{counts[lo]})"
        )


def _check_complete(benchmark, items, ids, path, meta, subset) -> bool:
    """True when every item of the data has samples; a partial file needs `subset` or a
    recorded `limit` that it matches exactly (the data's first `limit` items)."""
    have = set(ids)
    missing = [it.id for it in items if it.id not in have]
    if not missing or subset:
        return not missing
    limit = meta.get("limit")
    if type(limit) is int and limit == len(ids) and have == {it.id for it in items[:limit]}:
        return False
    why = f" (its generation recorded limit {limit!r})" if limit is not None else ""
    raise EvalInputError(
        f"{path}: no samples for {len(missing)} {benchmark} item(s), e.g. {missing[:5]}{why}; "
        "pass --subset to score only the items present"
    )


def generated_commit(bench, meta: dict) -> str | None:
    """The hub dataset commit the samples were generated from (their meta's `repo@commit`), so
    scoring reads the same items even when the dataset's branch has moved since."""
    repo = bench.source.get("hf_dataset")
    m = (
        re.fullmatch(rf"{re.escape(repo)}@([0-9a-f]{{40}})", str(meta.get("data")))
        if repo
        else None
    )
    return m[1] if m else None


def score_file(
    benchmark: str,
    samples: Path,
    output: Path,
    data: Path | None = None,
    source: str | None = None,
    subset: bool = False,
    allow_uneven: bool = False,
    allow_unsandboxed: bool = False,
) -> dict:
    """Score `samples`; the data is `data`, else the source recorded by `generate`, else the hub."""
    bench = get_benchmark(benchmark)
    if bench.format in CODE_FORMATS:
        if allow_unsandboxed:
            sandbox.allow_unsandboxed()
        sandbox.require()
    rows = read_samples(samples)
    meta_file = meta_path(samples)
    meta = read_meta(meta_file)
    if source is None:
        source = meta.get("data_source", "hf")
    if data is None and meta.get("data_file"):
        data = Path(meta["data_file"])
    items, origin = load_items(bench, data, source, generated_commit(bench, meta))
    by_id = {it.id: it for it in items}
    _check_ids(benchmark, bench.format, rows, samples)
    ids = [r["id"] for r in rows]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise EvalInputError(
            f"{samples}: ids not in the {benchmark} data ({origin}): {unknown[:5]}; "
            "score the samples against the data they were generated from (--data)"
        )
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        raise EvalInputError(f"{samples}: duplicate ids {dup[:5]}; keep one row per item")
    _check_counts(rows, samples, allow_uneven)
    complete = _check_complete(benchmark, items, ids, samples, meta, subset)
    t0 = time.perf_counter()
    metrics, per_item = get_scorer(bench.scorer)(by_id, rows)
    result = {
        "benchmark": benchmark,
        "n_items": len(rows),
        "n_samples": min(len(r["completions"]) for r in rows),
        "metrics": metrics,
        "headline": bench.headline,
        "data": origin,
        "n_items_in_data": len(items),
        "complete": complete,
        "samples": str(Path(samples).resolve()),
        "generation": {
            k: meta.get(k) for k in ("model", "template", "sampling", "suite", "versions")
        }
        if meta
        else None,
        "scoring_s": round(time.perf_counter() - t0, 2),
        "versions": versions(*SCORING_PACKAGES),
        "items": per_item,
    }
    if bench.format in CODE_FORMATS:
        result["sandbox"] = sandbox.mode()
        result["sandbox_process_cap"] = sandbox.process_cap()
        result["allow_unsandboxed"] = allow_unsandboxed
    write_text_atomic(Path(output), json.dumps(result, indent=1, default=str) + "\n")
    return result


class ScoreEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmark: str
    samples: Path
    output: Path


class ScoreRequest(BaseModel):
    """Every score file of one job."""

    model_config = ConfigDict(extra="forbid")
    allow_unsandboxed: bool = False
    scores: list[ScoreEntry] = Field(min_length=1)


def score_batch(request: Path, manifest: Path) -> dict:
    """Score every entry of a request (JSON, `ScoreRequest`'s fields) in one process, HumanEval+
    before HumanEval so the latter reuses the base tests' statuses; then write the manifest."""
    try:
        req = ScoreRequest.model_validate_json(Path(request).read_text())
    except (OSError, ValueError) as e:
        raise EvalInputError(f"score request {request}: {e}") from e
    if req.allow_unsandboxed:
        sandbox.allow_unsandboxed()
    if any(get_benchmark(e.benchmark).format in CODE_FORMATS for e in req.scores):
        sandbox.require()  # before anything is scored
    done = {}
    for e in sorted(req.scores, key=lambda e: get_benchmark(e.benchmark).scorer != "evalplus_plus"):
        guard_output(e.output, [("samples file", e.samples)], kind="file")
        res = score_file(e.benchmark, e.samples, e.output, allow_unsandboxed=req.allow_unsandboxed)
        done[str(e.output)] = {"benchmark": e.benchmark, "metrics": res["metrics"]}
    record = {
        "request": str(Path(request).resolve()),
        "scores": [done[str(e.output)] | {"output": str(e.output)} for e in req.scores],
    }
    write_text_atomic(Path(manifest), json.dumps(record, indent=1) + "\n")
    return record
