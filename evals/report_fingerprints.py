"""The report's section on merged weights: each merge's fingerprint check against the baseline
(`results/RUN/fingerprints.json`, written by `python -m merges.fingerprint_check collect`) beside
whether its score rows moved, so a moved merge whose scores held still is said as such. A sweep
point has no test rows (it meets the validation suite only) and is said to be one."""

from __future__ import annotations

import json
from pathlib import Path

SHOW = 5  # tensors named per moved merge


def fingerprint_report(
    path: Path, moved_rows: set[str], rows: set[str] | None = None
) -> tuple[list[str], dict]:
    """(markdown lines, JSON record) for the merges of a collected fingerprints file; empty when
    the run had no baseline fingerprints. A merge without a row of `rows` (a sweep point) has
    `scores_moved` None."""
    merges = json.loads(Path(path).read_text())["merges"]
    checked = {m: r["comparison"] for m, r in merges.items() if r.get("comparison")}
    if not checked:
        return [], {}
    record = {}
    for mid, c in checked.items():
        has_row = rows is None or any(r == mid or r.startswith(f"{mid}@") for r in rows)
        scores_moved = (
            any(r == mid or r.startswith(f"{mid}@") for r in moved_rows) if has_row else None
        )
        record[mid] = {
            "status": c["status"],
            "moved_tensors": c.get("moved", {}),
            "bit_differences": len(c.get("bit_differences", [])),
            "scores_moved": scores_moved,
        }
    baseline = next(r["baseline"] for r in merges.values() if r.get("comparison"))
    moved = {m: r for m, r in record.items() if r["status"] in ("moved", "incomparable")}
    lines = [
        "",
        "## Merged weights against the baseline fingerprints",
        "",
        f"Each merge's weights were compared with `{baseline}` right after it was written. "
        f"{len(moved)} of {len(record)} merges moved beyond the tolerance.",
        "",
    ]
    for mid, r in sorted(moved.items()):
        tensors = list(r["moved_tensors"].items())
        named = ", ".join(f"`{n}` {v:.3g}" for n, v in tensors[:SHOW])
        more = f" and {len(tensors) - SHOW} more" if len(tensors) > SHOW else ""
        effect = {
            True: "its scores moved too",
            False: "its scores did not move",
            None: "a sweep point, scored on validation only",
        }[r["scores_moved"]]
        what = f"{len(tensors)} tensors moved ({named}{more})" if tensors else r["status"]
        lines.append(f"- **{mid}**: {what}; {effect}.")
    bits = sorted(m for m, r in record.items() if r["status"] == "bits")
    new = sorted(m for m, r in record.items() if r["status"] == "new")
    if bits:
        lines.append(f"- Within the tolerance but not bit-identical: {', '.join(bits)}.")
    if new:
        lines.append(f"- Not in the baseline: {', '.join(new)}.")
    same = [m for m, r in record.items() if r["status"] == "identical"]
    lines.append(f"- Bit-identical to the baseline: {len(same)} merges.")
    return lines, {"baseline": baseline, "merges": record}
