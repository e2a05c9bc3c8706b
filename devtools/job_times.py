"""Where a DAG run's time went: Snakemake's per-job `benchmark:` files summed by rule.

    python -m devtools.job_times benchmarks/demo

prints a markdown table (jobs, wall seconds summed and the largest job, CPU seconds) per rule.
Job wall times overlap when jobs run in parallel, so the sum is work, not elapsed time.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def job_times(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """{rule: [(wall s, cpu s) per job]} from `folder/<rule>/**/*.tsv` (and `folder/<rule>.tsv`)."""
    folder = Path(folder)
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in sorted(folder.rglob("*.tsv")):
        rule = f.relative_to(folder).parts[0].removesuffix(".tsv")
        rows = list(csv.DictReader(f.open(), delimiter="\t"))
        if not rows:
            continue
        out[rule].append((float(rows[-1]["s"]), float(rows[-1]["cpu_time"])))
    return dict(out)


def table(times: dict[str, list[tuple[float, float]]]) -> str:
    lines = [
        "| rule | jobs | wall s (sum) | largest job s | CPU s (sum) |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule, jobs in sorted(times.items(), key=lambda kv: -sum(w for w, _ in kv[1])):
        wall, cpu = sum(w for w, _ in jobs), sum(c for _, c in jobs)
        lines.append(
            f"| {rule} | {len(jobs)} | {wall:.0f} | {max(w for w, _ in jobs):.0f} | {cpu:.0f} |"
        )
    total = [j for jobs in times.values() for j in jobs]
    lines.append(
        f"| all | {len(total)} | {sum(w for w, _ in total):.0f} | | {sum(c for _, c in total):.0f} |"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(
            "usage: python -m devtools.job_times BENCHMARKS_FOLDER (e.g. benchmarks/demo)",
            file=sys.stderr,
        )
        return 2
    print(table(job_times(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
