"""Fingerprint checks without torch: one merge's fingerprint against a committed baseline, a run's
checks collected into one file (the format a baseline is kept in), two collections compared.

The DAG's light entry (no torch import, so a check costs a fraction of a second):
    python -m merges.fingerprint_check check RAW.json --id ID [--baseline FILE] [--tolerance X] [--strict] -o OUT.json
    python -m merges.fingerprint_check collect OUT.json... -o fingerprints.json
Users compare runs with `python -m merges fingerprint-compare NEW BASELINE`.

A tensor has moved when its estimated relative change of the delta, or the relative change of the
delta's norm, exceeds the tolerance; a different hash within the tolerance is reported as a
bit-level difference only (docs/merging.md#fingerprints says how the tolerance was measured).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from merges.errors import MergeInputError

K = 8  # projections: the estimate is within a factor 2 of the true change for 98% of tensors
SEED = 20_251_202
VERSION = 1  # bump when the fingerprint's definition changes: older baselines are then refused
# relative change of a tensor's delta that counts as moved (measured: docs/merging.md)
TOLERANCE = 0.05
TINY = 1e-30
NEW = {"status": "new", "reason": "no baseline fingerprint for this merge"}


def relative_change(new: dict, old: dict) -> float:
    """How far a tensor's delta moved, relative to the old delta's norm: the larger of the
    projection estimate and the change of the norm itself (0.0 for identical bytes)."""
    if new["sha256"] == old["sha256"]:
        return 0.0
    if "delta_norm" not in new or "delta_norm" not in old:
        return math.inf  # a non-float tensor whose bytes changed
    gap = math.dist(new["projection"], old["projection"]) / math.sqrt(len(old["projection"]))
    scale = max(old["delta_norm"], TINY)
    return max(gap / scale, abs(new["delta_norm"] - old["delta_norm"]) / scale)


def compare(new: dict, old: dict, tolerance: float = TOLERANCE) -> dict:
    """One merge's fingerprint against its baseline: which tensors moved beyond `tolerance`, which
    differ in their bits only, and which are missing on either side."""
    for fp, what in ((new, "new"), (old, "baseline")):
        if fp.get("version") != VERSION or fp.get("k") != K or fp.get("seed") != SEED:
            return {"status": "incomparable", "reason": f"the {what} fingerprint has another "
                    f"definition (version {fp.get('version')}, k {fp.get('k')}, seed {fp.get('seed')}); "
                    "write the baseline again with this code"}  # fmt: skip
    a, b = new["tensors"], old["tensors"]
    moved, bits = {}, []
    for name in sorted(set(a) & set(b)):
        rel = relative_change(a[name], b[name])
        if not rel <= tolerance:  # NaN counts as moved
            moved[name] = rel
        elif a[name]["sha256"] != b[name]["sha256"]:
            bits.append(name)
    only_new, only_old = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    status = "moved" if moved or only_new or only_old else "bits" if bits else "identical"
    return {
        "status": status,
        "tolerance": tolerance,
        "moved": dict(
            sorted(moved.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else -math.inf)
        ),
        "bit_differences": bits,
        "only_new": only_new,
        "only_baseline": only_old,
        "tensors": len(a),
    }


def summary_line(merge_id: str, result: dict, show: int = 5) -> str:
    """One line for a log or a console: the merge, its status, and the tensors that moved most."""
    status = result["status"]
    if status == "moved":
        worst = ", ".join(f"{n} ({r:.3g})" for n, r in list(result["moved"].items())[:show])
        more = len(result["moved"]) - show
        extra = (
            [f"only in the new merge: {', '.join(result['only_new'][:show])}"]
            if result["only_new"]
            else []
        )
        extra += (
            [f"only in the baseline: {', '.join(result['only_baseline'][:show])}"]
            if result["only_baseline"]
            else []
        )
        tail = f" (+{more} more)" if more > 0 else ""
        return (f"{merge_id}: MOVED, {len(result['moved'])} of {result['tensors']} tensors beyond "
                f"{result['tolerance']:g} (relative change of the delta): {worst}{tail}"
                + "".join(f"; {e}" for e in extra))  # fmt: skip
    if status == "bits":
        return (f"{merge_id}: within tolerance; {len(result['bit_differences'])} tensors differ in "
                "their bits only")  # fmt: skip
    if status == "incomparable":
        return f"{merge_id}: not compared: {result['reason']}"
    return f"{merge_id}: identical to the baseline"


def load_collection(path: Path, what: str = "baseline") -> dict[str, dict]:
    """{merge id: fingerprint} of a collected fingerprints file (a run's fingerprints.json)."""
    try:
        data = json.loads(Path(path).read_text())
        merges = {mid: rec["fingerprint"] for mid, rec in data["merges"].items()}
        if not all(isinstance(fp.get("tensors"), dict) for fp in merges.values()):
            raise TypeError("a fingerprint without tensors")
    except FileNotFoundError:
        raise MergeInputError(f"{what} fingerprints {path} do not exist; give a run's "
                              "results/RUN/fingerprints.json") from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise MergeInputError(
            f"{what} fingerprints {path} are malformed ({type(e).__name__}: {e}); expected "
            "{'merges': {ID: {'fingerprint': ...}}} as a run's results/RUN/fingerprints.json"
        ) from None
    return merges


def check(fp: dict, merge_id: str, baseline: Path | None, tolerance: float = TOLERANCE) -> dict:
    """A merge's fingerprint beside its comparison with the baseline entry (None: no baseline)."""
    if baseline is None:
        comparison = None
    else:
        ref = load_collection(baseline).get(merge_id)
        comparison = NEW if ref is None else compare(fp, ref, tolerance)
    return {"merge": merge_id, "baseline": baseline and str(baseline), "fingerprint": fp,
            "comparison": comparison}  # fmt: skip


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


def dumps_collection(collection: dict) -> str:
    """JSON with one line per tensor, so a committed baseline diffs tensor by tensor."""
    lines = ['{"merges": {']
    for i, (mid, rec) in enumerate(collection["merges"].items()):
        fp = rec["fingerprint"]
        head = {k: v for k, v in rec.items() if k != "fingerprint"}
        meta = {k: v for k, v in fp.items() if k != "tensors"}
        lines.append(f" {json.dumps(mid)}: {json.dumps(head)[:-1]}, \"fingerprint\": "
                     f"{json.dumps(meta)[:-1]}, \"tensors\": {{")  # fmt: skip
        rows = [f"  {json.dumps(n)}: {json.dumps(t)}" for n, t in fp["tensors"].items()]
        lines.append(",\n".join(rows))
        lines.append(" }}}" + ("," if i < len(collection["merges"]) - 1 else ""))
    return "\n".join(lines) + "\n}}\n"


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


def cmd_check(args) -> int:
    from mergeeval.outputs import write_text_atomic

    try:
        fp = json.loads(Path(args.raw).read_text())["fingerprint"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise MergeInputError(f"{args.raw} is not a merge's fingerprint ({type(e).__name__}: {e}); "
                              "run the merge again (merges run --fingerprint)") from None  # fmt: skip
    record = check(fp, args.id, Path(args.baseline) if args.baseline else None, args.tolerance)
    write_text_atomic(Path(args.output), json.dumps(record, indent=1) + "\n")
    print(describe(args.id, record), flush=True)
    moved = (record["comparison"] or {}).get("status") == "moved"
    return 1 if moved and args.strict else 0


def cmd_collect(args) -> int:
    from mergeeval.outputs import write_text_atomic

    write_text_atomic(Path(args.output), dumps_collection(collect(args.files)))
    return 0


def add_check_options(p: argparse.ArgumentParser) -> None:
    from mergeeval.cli import non_negative_float

    p.add_argument("--id", required=True, help="the merge's id (its key in the baseline)")
    p.add_argument("--baseline", help="collected fingerprints to compare with")
    p.add_argument("--tolerance", type=non_negative_float, default=TOLERANCE,
                   help="relative change of a tensor's delta that counts as moved")  # fmt: skip
    p.add_argument("--strict", action="store_true", help="exit 1 when the merge moved")
    p.add_argument("-o", "--output", required=True, help="the check's file (JSON)")


def main(argv: list[str] | None = None) -> int:
    from mergeeval.cli import run

    p = argparse.ArgumentParser(prog="python -m merges.fingerprint_check", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="a merge's fingerprint against the baseline")
    c.add_argument("raw", help="the fingerprint `merges run --fingerprint` wrote")
    add_check_options(c)
    c.set_defaults(fn=cmd_check)
    k = sub.add_parser("collect", help="one file of a run's checks (a later run's baseline)")
    k.add_argument("files", nargs="+", type=Path)
    k.add_argument("-o", "--output", required=True)
    k.set_defaults(fn=cmd_collect)
    return run(p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
