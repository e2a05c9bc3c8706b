"""Score one benchmark's sample file against its data: ids checked, scorer run, JSON written."""

from __future__ import annotations

import json
import time
from pathlib import Path

from evals.data import load_items
from evals.errors import EvalInputError
from evals.registry import get_benchmark
from evals.samples import atomic_write_text, meta_path, read_samples
from evals.scorers import get_scorer


def _normalise_ids(bench_format: str, rows: list[dict], path) -> None:
    for row in rows:
        if bench_format in ("aime", "ifeval"):
            try:
                row["id"] = int(row["id"])
            except (TypeError, ValueError):
                raise EvalInputError(
                    f"{path}: id {row['id']!r} is not an integer ({bench_format} ids are integers)"
                ) from None


def score_file(
    benchmark: str,
    samples: Path,
    output: Path,
    data: Path | None = None,
    source: str | None = None,
    subset: bool = False,
) -> dict:
    """Score `samples`; the data is `data`, else the source recorded by `generate`, else the hub."""
    bench = get_benchmark(benchmark)
    rows = read_samples(samples)
    meta_file = meta_path(samples)
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if source is None:
        source = meta.get("data_source", "hf")
    if data is None and meta.get("data_file"):
        data = Path(meta["data_file"])
    items, origin = load_items(bench, data, source)
    by_id = {it.id: it for it in items}
    _normalise_ids(bench.format, rows, samples)
    ids = [r["id"] for r in rows]
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise EvalInputError(
            f"{samples}: ids not in the {benchmark} data ({origin}): {unknown[:5]}"
        )
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        raise EvalInputError(f"{samples}: duplicate ids {dup[:5]}")
    missing = [i for i in by_id if i not in set(ids)]
    limited = meta.get("limit") is not None
    if missing and not (subset or limited):
        raise EvalInputError(
            f"{samples}: no samples for {len(missing)} {benchmark} item(s), e.g. {missing[:5]}; "
            "pass --subset to score only the items present"
        )
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
        "samples": str(Path(samples).resolve()),
        "generation": {k: meta.get(k) for k in ("model", "template", "sampling", "suite")}
        if meta
        else None,
        "scoring_s": round(time.perf_counter() - t0, 2),
        "items": per_item,
    }
    atomic_write_text(Path(output), json.dumps(result, indent=1, default=str) + "\n")
    return result
