"""The Table 1 report: markdown, CSV, JSON and a PNG plot from score files.

Cells are the benchmark's headline metric in percent (pass@1; IFEval prompt-level loose), one
decimal; `average` is the plain mean of the five. With the `table1` suite the markdown shows the
paper's number and the difference beside each cell. Rows named `ROW@POLICY` (the same model scored
under the other chat-template policy) form a second table with their difference from `ROW`. With a
baseline CSV (same header) every cell that moved by more than its noise band is marked; the band is
one number for every cell or a CSV of the table's layout with one band per cell.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from evals.errors import EvalInputError
from evals.registry import ROOT
from mergeeval.outputs import write_text_atomic

COLUMNS = ["humaneval", "humanevalplus", "aime24", "aime25", "ifeval"]
PAPER = ROOT / "reference" / "table1_paper.csv"


def read_table(path: Path) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"table not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or rows[0].keys() != {"model", *COLUMNS, "average"}:
        raise EvalInputError(f"{path}: header must be model,{','.join(COLUMNS)},average")
    return {
        r["model"]: {k: float(v) for k, v in r.items() if k != "model" and v not in ("", None)}
        for r in rows
    }


Band = float | dict[str, dict[str, float]]


def band_of(band: Band, row: str, col: str) -> float:
    """The noise band of one cell: a number, or the cell of a band table (0 where it has none)."""
    if isinstance(band, dict):
        return band.get(row, {}).get(col, 0.0)
    return float(band)


def read_band(value: str | float) -> Band:
    """`--noise-band`: points, or a CSV of per-cell bands."""
    try:
        return float(value)
    except ValueError:
        return read_table(Path(value))


def compare(table, base, band: Band) -> list[dict]:
    """Cells that moved beyond their band, rows missing on either side, in table order."""
    out = []
    for row in [*table, *(r for r in base if r not in table)]:
        if row not in base or row not in table:
            out.append(
                {"row": row, "column": None, "change": "new row" if row in table else "missing row"}
            )
            continue
        for c in [*COLUMNS, "average"]:
            if c in base[row] and c in table[row]:
                d = round(table[row][c] - base[row][c], 1)
                if abs(d) > band_of(band, row, c):
                    out.append(
                        {
                            "row": row,
                            "column": c,
                            "baseline": base[row][c],
                            "now": table[row][c],
                            "delta": d,
                            "band": band_of(band, row, c),
                        }
                    )
    return out


def describe(moved: list[dict]) -> str:
    """One line per moved cell, for a terminal."""
    if not moved:
        return "no cell moved beyond its noise band"
    lines = [f"{len(moved)} cell(s) moved beyond the noise band:"]
    for m in moved:
        if m["column"] is None:
            lines.append(f"  {m['row']}: {m['change']}")
        else:
            lines.append(
                f"  {m['row']:<24} {m['column']:<14} {m['baseline']:6.1f} -> {m['now']:6.1f}"
                f"  ({m['delta']:+.1f}, band {m['band']:.1f})"
            )
    return "\n".join(lines)


def cell_value(score_file: Path) -> float:
    res = json.loads(Path(score_file).read_text())
    return 100.0 * res["metrics"][res["headline"]]


def build_table(cells: dict[str, dict[str, Path]]) -> dict[str, dict[str, float]]:
    """{row: {benchmark: score file}} -> {row: {benchmark: percent, average}} (rounded to 0.1)."""
    table = {}
    for row, files in cells.items():
        missing = [c for c in COLUMNS if c not in files]
        if missing:
            raise EvalInputError(f"report row {row!r} has no score for {missing}")
        vals = {c: cell_value(files[c]) for c in COLUMNS}
        vals["average"] = sum(vals.values()) / len(COLUMNS)
        table[row] = {k: round(v, 1) for k, v in vals.items()}
    return table


def to_csv(table) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", *COLUMNS, "average"])
    for row, vals in table.items():
        w.writerow([row, *(f"{vals[c]:.1f}" for c in [*COLUMNS, "average"])])
    return out.getvalue()


def _rows_md(table, rows, paper, baseline, band, relative_to=None) -> list[str]:
    cols = [*COLUMNS, "average"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in rows:
        vals, cells = table[row], []
        for c in cols:
            cell = f"{vals[c]:.1f}"
            if paper and row in paper and c in paper[row]:
                cell += f" (paper {paper[row][c]:.1f}, {vals[c] - paper[row][c]:+.1f})"
            ref = relative_to(row) if relative_to else None
            if ref in table:
                cell += f" ({vals[c] - table[ref][c]:+.1f})"
            if baseline and row in baseline and c in baseline[row]:
                d = round(vals[c] - baseline[row][c], 1)
                if abs(d) > band_of(band, row, c):
                    cell += f" **moved {d:+.1f}**"
            cells.append(cell)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(
    table, title: str, notes: list[str], paper=None, baseline=None, band: Band = 0.5
) -> str:
    main = [r for r in table if "@" not in r]
    other = [r for r in table if "@" in r]
    lines = [f"# {title}", "", *notes, "", *_rows_md(table, main, paper, baseline, band)]
    if other:
        policy = other[0].split("@", 1)[1]
        lines += [
            "",
            f"## Template effect: the same models under the `{policy}` policy",
            "",
            "Beside each cell: the difference from the row above scored under the main policy.",
            "",
            *_rows_md(table, other, None, baseline, band, relative_to=lambda r: r.split("@")[0]),
        ]
    return "\n".join(lines) + "\n"


def plot(table, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table)
    cols = [*COLUMNS, "average"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(rows))
    colours = plt.get_cmap("tab20").colors
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(cols))]
        ax.bar(xs, [table[row][c] for c in cols], width, label=row, color=colours[i % len(colours)])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols)
    top = max((v for r in table.values() for v in r.values()), default=0.0)
    ax.set_ylim(0, max(1.0, top * 1.15))
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(
    cells,
    out_prefix: Path,
    suite: str,
    template: str,
    baseline: Path | None = None,
    band: Band = 0.5,
    extra: dict | None = None,
) -> dict:
    """Write out_prefix.{md,csv,json,png}; return the JSON record."""
    out_prefix = Path(out_prefix)
    table = build_table(cells)
    paper = read_table(PAPER) if suite == "table1" else None
    base = read_table(baseline) if baseline else None
    title = f"Table 1 ({suite} suite, template policy {template})"
    notes = [
        f"Percent; IFEval = prompt-level loose accuracy; average = mean of the five. Template policy: `{template}`."
    ]
    if paper:
        notes.append(
            "Beside each cell: the paper's number and the difference (run-to-run noise about ±0.5 pt, more on AIME)."
        )
    if base:
        what = f"{band} pt" if not isinstance(band, dict) else "their per-cell band"
        notes.append(
            f"Compared with baseline {baseline}: cells that moved more than {what} are marked **moved**."
        )
    changes = compare(table, base, band) if base else []
    record = {
        "suite": suite,
        "template_policy": template,
        "table": table,
        "paper": paper,
        "baseline": {"path": str(baseline), "band": band, "table": base} if base else None,
        "moved": sorted(
            [m["row"], m["column"], m["delta"]] for m in changes if m["column"] is not None
        ),
        "baseline_rows_changed": [[m["row"], m["change"]] for m in changes if m["column"] is None],
        "template_effect": {
            row: {c: round(v - table[row.split("@")[0]][c], 1) for c, v in vals.items()}
            for row, vals in table.items()
            if "@" in row and row.split("@")[0] in table
        },
        "scores": {
            row: {c: str(Path(p).resolve()) for c, p in files.items()}
            for row, files in cells.items()
        },
        **(extra or {}),
    }
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_prefix.with_suffix(".csv"), to_csv(table))
    write_text_atomic(
        out_prefix.with_suffix(".md"), to_markdown(table, title, notes, paper, base, band)
    )
    plot(table, out_prefix.with_suffix(".png"), title)
    write_text_atomic(out_prefix.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record
