"""A per-cell noise band from measurement: the expected table against the same tree's tables under
perturbations that must not matter (other thread counts, other CPU kernels), each cell's band being
the largest difference seen plus one item of its benchmark (the measurement's resolution).

    python -m devtools.noise_band EXPECTED.csv PERTURBED.csv [PERTURBED.csv ...] \
        --items 50 -o band.csv

A row's average gets the largest difference of its average plus one item of one column divided
by the number of columns. Prints how many cells moved under each perturbation.
"""

import argparse
import csv
from pathlib import Path

from evals.report import read_table


def band(expected: dict, perturbed: list[dict], items: int) -> dict[str, dict[str, float]]:
    item = 100.0 / items
    out = {}
    for row, cells in expected.items():
        columns = [c for c in cells if c != "average"]
        out[row] = {}
        for col, value in cells.items():
            seen = max((abs(t[row][col] - value) for t in perturbed), default=0.0)
            unit = item / len(columns) if col == "average" else item
            out[row][col] = round(seen + unit, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.noise_band", description=__doc__)
    ap.add_argument("expected", type=Path)
    ap.add_argument("perturbed", type=Path, nargs="+")
    ap.add_argument("--items", type=int, required=True, help="items per benchmark")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    expected = read_table(args.expected)
    perturbed = [read_table(p) for p in args.perturbed]
    for path, table in zip(args.perturbed, perturbed, strict=True):
        moved = sum(table[r][c] != v for r, cells in expected.items() for c, v in cells.items())
        print(f"{path}: {moved} cells differ from {args.expected}")
    result = band(expected, perturbed, args.items)
    columns = list(next(iter(expected.values())))
    with open(args.output, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", *columns])
        for row, cells in result.items():
            w.writerow([row, *(f"{cells[c]:.1f}" for c in columns)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
