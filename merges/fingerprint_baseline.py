"""Fingerprint files of a run and their baseline: one merge's check against a committed baseline
(`python -m merges fingerprint`), a run's collected fingerprints (`fingerprint-collect`, the
format a baseline is kept in) and two collections compared (`fingerprint-compare`)."""

from __future__ import annotations

import json
from pathlib import Path

from merges.errors import MergeInputError
from merges.fingerprint import TOLERANCE, compare, fingerprint, summary_line

NEW = {"status": "new", "reason": "no baseline fingerprint for this merge"}


def load_collection(path: Path, what: str = "baseline") -> dict[str, dict]:
    """{merge id: fingerprint} of a collected fingerprints file (`fingerprint-collect`'s output)."""
    try:
        data = json.loads(Path(path).read_text())
        merges = {mid: rec["fingerprint"] for mid, rec in data["merges"].items()}
        if not all(isinstance(fp.get("tensors"), dict) for fp in merges.values()):
            raise TypeError("a fingerprint without tensors")
    except FileNotFoundError:
        raise MergeInputError(f"{what} fingerprints {path} do not exist; give the file "
                              "`python -m merges fingerprint-collect` wrote") from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise MergeInputError(
            f"{what} fingerprints {path} are malformed ({type(e).__name__}: {e}); expected "
            "{'merges': {ID: {'fingerprint': ...}}} as `python -m merges fingerprint-collect` writes"
        ) from None
    return merges


def check_merge(
    model: Path,
    base: Path | None,
    merge_id: str,
    baseline: Path | None,
    tolerance: float = TOLERANCE,
) -> dict:
    """Fingerprint one merged folder and compare it with its baseline entry (when given)."""
    ref = load_collection(baseline).get(merge_id, None) if baseline is not None else None
    fp = fingerprint(model, base)
    if baseline is None:
        comparison = None
    elif ref is None:
        comparison = NEW
    else:
        comparison = compare(fp, ref, tolerance)
    return {"merge": merge_id, "model": str(model), "baseline": baseline and str(baseline),
            "fingerprint": fp, "comparison": comparison}  # fmt: skip


def describe(merge_id: str, record: dict) -> str:
    comparison = record["comparison"]
    if comparison is None:
        return f"{merge_id}: fingerprinted ({len(record['fingerprint']['tensors'])} tensors), no baseline"
    if comparison["status"] == "new":
        return f"{merge_id}: {comparison['reason']}"
    return summary_line(merge_id, comparison)


def collect(files: list[Path]) -> dict:
    """One run's fingerprint checks in one file: {'merges': {id: check}} (a baseline's format)."""
    merges = {}
    for f in files:
        rec = json.loads(Path(f).read_text())
        merges[rec["merge"]] = rec
    return {"merges": dict(sorted(merges.items()))}


def compare_collections(new: Path, old: Path, tolerance: float = TOLERANCE) -> dict[str, dict]:
    """Every merge of `new` against `old`: {id: comparison} ('new' for merges `old` lacks)."""
    a, b = load_collection(new, "new"), load_collection(old)
    return {mid: compare(fp, b[mid], tolerance) if mid in b else NEW for mid, fp in a.items()}


def markdown(results: dict[str, dict]) -> str:
    """One line per merge, moved ones first."""
    order = {"moved": 0, "incomparable": 1, "new": 2, "bits": 3, "identical": 4}
    rows = sorted(results.items(), key=lambda kv: (order[kv[1]["status"]], kv[0]))
    moved = sum(r["status"] == "moved" for r in results.values())
    lines = [f"{moved} of {len(results)} merges moved beyond their fingerprint tolerance"]
    lines += [
        f"- {describe(mid, {'comparison': r, 'fingerprint': {'tensors': {}}})}" for mid, r in rows
    ]
    return "\n".join(lines) + "\n"
