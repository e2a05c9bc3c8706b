"""A sweep's selection: every point's validation scores, the point the rule picks, and its folder
copied as the merge's row (the report draws the sweep's plot, evals.report_sweeps).

    python -m pipeline.select choose --sweep SWEEP.json --output results/RUN/sweeps/ID.json
    python -m pipeline.select copy --selection results/RUN/sweeps/ID.json --output DIR \
        --fingerprint-out FILE

The sweep file (written by the plan) lists the points with their parameters, folders, fingerprint
files and validation score files per benchmark. The rule is `average` (the mean of the validation
suite's headline metrics) or one benchmark's headline; ties go to the earlier point in grid order.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from evals.registry import get_suite
from evals.report import cell_value
from evals.report_sweeps import grid_edges
from mergeeval.errors import InputError
from mergeeval.outputs import atomic_dir, write_text_atomic


def choose(sweep: dict) -> dict:
    """The selection record: per point its validation scores and the rule's value; the chosen id."""
    suite = get_suite(sweep["suite"])
    rule = sweep["rule"]
    points = []
    for p in sweep["points"]:
        scores = {
            b: cell_value(Path(f), suite.benchmark(b).headline) for b, f in p["scores"].items()
        }
        value = sum(scores.values()) / len(scores) if rule == "average" else scores[rule]
        points.append({"id": p["id"], "values": p["values"], "scores": scores, "value": value})
    best = max(points, key=lambda p: p["value"])  # max keeps the first of equal values
    return {
        "merge": sweep["merge"],
        "validation_suite": sweep["suite"],
        "rule": rule,
        "selected": best["id"],
        "values": best["values"],
        "points": points,
    }


def copy_selected(selection: Path, sweep: dict, output: Path, fingerprint_out: Path) -> None:
    """The selected point's folder as the merge's row (with the selection beside merge.json) and its
    fingerprint as the row's."""
    record = json.loads(selection.read_text())
    point = next(p for p in sweep["points"] if p["id"] == record["selected"])
    with atomic_dir(output) as tmp:
        shutil.copytree(point["folder"], tmp, dirs_exist_ok=True)
        (tmp / "sweep.json").write_text(json.dumps(record, indent=2) + "\n")
    raw = json.loads(Path(point["fingerprint"]).read_text())
    write_text_atomic(fingerprint_out, json.dumps(raw) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.select", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("choose", help="score every point on validation and pick one")
    c.add_argument("--sweep", required=True)
    c.add_argument("--output", required=True, help="the selection JSON")
    k = sub.add_parser("copy", help="copy the selected point's folder as the merge's row")
    k.add_argument("--sweep", required=True)
    k.add_argument("--selection", required=True)
    k.add_argument("--output", required=True)
    k.add_argument("--fingerprint-out", required=True)
    args = ap.parse_args(argv)
    try:
        sweep = json.loads(Path(args.sweep).read_text())
        if args.cmd == "choose":
            record = choose(sweep)
            write_text_atomic(Path(args.output), json.dumps(record, indent=2) + "\n")
            print(f"{record['merge']}: selected {record['selected']} "
                  f"(validation {record['rule']} {max(p['value'] for p in record['points']):.1f})")  # fmt: skip
            for key, edge in grid_edges(record).items():
                print(f"warning: {record['merge']}: {key} = {record['values'][key]} is the {edge} "
                      "value of its grid; the best may lie beyond it", file=sys.stderr)  # fmt: skip
        else:
            copy_selected(
                Path(args.selection), sweep, Path(args.output), Path(args.fingerprint_out)
            )
    except (InputError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
