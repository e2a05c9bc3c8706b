"""The Table 1 report: markdown, CSV, JSON and a PNG plot from score files.

The suite is the layout: its benchmarks are the columns, in its order, each at its headline metric
(percent, one decimal); `average` is the plain mean of the columns. With a suite that names a
reference table (`table1`: the paper's numbers) the markdown shows it and the difference beside
each cell. Rows named `ROW@POLICY` (the same model scored
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
from evals.registry import Suite, get_suite
from evals.report_fingerprints import fingerprint_report
from evals.report_sweeps import sweep_report
from mergeeval.outputs import atomic_file, write_text_atomic

Table = dict[str, dict[str, float]]  # {row: {column: percent}}; "average" once every cell is there


def read_table(path: Path) -> Table:
    """A report CSV (model, one column per benchmark, average); empty cells are absent."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"table not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or next(iter(rows[0])) != "model":
        raise EvalInputError(
            f"{path}: a table's header starts with model, then one column per benchmark"
        )
    try:
        return {
            r["model"]: {k: float(v) for k, v in r.items() if k != "model" and v not in ("", None)}
            for r in rows
        }
    except ValueError as e:
        raise EvalInputError(f"{path}: a cell is not a number ({e})") from None


def columns_of(table: Table) -> list[str]:
    """The table's columns in first-seen order, average last."""
    cols = list(dict.fromkeys(c for vals in table.values() for c in vals if c != "average"))
    return [*cols, "average"]


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


def compare(table: Table, base: Table, band: Band) -> list[dict]:
    """Cells that moved beyond their band, and rows or cells present on one side only, in table order."""
    out = []
    for row in [*table, *(r for r in base if r not in table)]:
        if row not in base or row not in table:
            out.append(
                {"row": row, "column": None, "change": "new row" if row in table else "missing row"}
            )
            continue
        same_columns = set(table[row]) == set(base[row])
        for c in dict.fromkeys([*columns_of({row: table[row]}), *columns_of({row: base[row]})]):
            if c == "average" and not same_columns:
                continue  # an average over other columns is not comparable
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
            elif c != "average":
                change = f"new cell {c}" if c in table[row] else f"missing cell {c}"
                out.append({"row": row, "column": None, "change": change})
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


def cell_value(score_file: Path, headline: str) -> float:
    res = json.loads(Path(score_file).read_text())
    if headline not in res["metrics"]:
        raise EvalInputError(
            f"{score_file} has no metric {headline!r} (it has {', '.join(res['metrics'])}); "
            "the suite's headline for this benchmark must be one of them"
        )
    return 100.0 * res["metrics"][headline]


def build_table(cells: dict[str, dict[str, Path]], suite: Suite) -> Table:
    """{row: {benchmark: score file}} -> {row: {benchmark: percent, average}} (rounded to 0.1).

    Columns are the suite's benchmarks, each at its headline metric; a row may lack cells (an
    expert row without an expert for some domain), and then has no average."""
    cols = suite.columns
    table = {}
    for row, files in cells.items():
        unknown = [c for c in files if c not in cols]
        if unknown:
            raise EvalInputError(
                f"report row {row!r}: {unknown} are not benchmarks of suite {suite.name!r}"
            )
        vals = {c: cell_value(files[c], suite.benchmark(c).headline) for c in cols if c in files}
        if len(vals) == len(cols):
            vals["average"] = sum(vals.values()) / len(cols)
        table[row] = {k: round(v, 1) for k, v in vals.items()}
    return table


def to_csv(table: Table, cols: list[str]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", *cols, "average"])
    for row, vals in table.items():
        w.writerow([row, *(f"{vals[c]:.1f}" if c in vals else "" for c in [*cols, "average"])])
    return out.getvalue()


def _rows_md(
    table, cols, rows, paper, baseline, band, relative_to=None, recipes=None, paper_rows=None
) -> list[str]:
    cols = [*cols, "average"]
    extra = ["recipe"] if recipes else []
    head = [*cols, *extra]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in rows:
        vals, cells = table[row], []
        ref_row = (paper_rows or {}).get(row, row)
        for c in cols:
            if c not in vals:
                cells.append("—")
                continue
            cell = f"{vals[c]:.1f}"
            if paper and ref_row in paper and c in paper[ref_row]:
                cell += f" (paper {paper[ref_row][c]:.1f}, {vals[c] - paper[ref_row][c]:+.1f})"
            ref = relative_to(row) if relative_to else None
            if ref in table and c in table[ref]:
                cell += f" ({vals[c] - table[ref][c]:+.1f})"
            comparable = c != "average" or set(vals) == set(
                baseline.get(row, {}) if baseline else {}
            )
            if baseline and row in baseline and c in baseline[row] and comparable:
                d = round(vals[c] - baseline[row][c], 1)
                if abs(d) > band_of(band, row, c):
                    cell += f" **moved {d:+.1f}**"
            cells.append(cell)
        if recipes:
            recipe = recipes.get(row, "")
            cells.append("authors' recipe" if recipe == "authors" else recipe)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(
    table,
    cols,
    title: str,
    notes: list[str],
    paper=None,
    baseline=None,
    band: Band = 0.5,
    recipes: dict[str, str] | None = None,
    paper_rows: dict[str, str] | None = None,
    blocks: dict[str, str] | None = None,
    block_titles: dict[str, str] | None = None,
) -> str:
    """The report's markdown: the main rows, each expert group's block (its own expert row and
    merges, no paper numbers: the paper's rows are full fine-tunes), then the template effect."""
    blocks = blocks or {}
    main = [r for r in table if "@" not in r and r not in blocks]
    other = [r for r in table if "@" in r]
    lines = [
        f"# {title}",
        "",
        *notes,
        "",
        *_rows_md(table, cols, main, paper, baseline, band, None, recipes, paper_rows),
    ]
    for group in dict.fromkeys(blocks.values()):
        rows = [r for r in table if blocks.get(r) == group]
        lines += [
            "",
            f"## {(block_titles or {}).get(group, f'Expert group `{group}`')}",
            "",
            *_rows_md(table, cols, rows, None, baseline, band, None, recipes),
        ]
    if other:
        policy = other[0].split("@", 1)[1]
        lines += [
            "",
            f"## Template effect: the same models under the `{policy}` policy",
            "",
            "Beside each cell: the difference from the row above scored under the main policy.",
            "",
            *_rows_md(
                table, cols, other, None, baseline, band, relative_to=lambda r: r.split("@")[0]
            ),
        ]
    return "\n".join(lines) + "\n"


def plot(table, cols, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table)
    cols = [*cols, "average"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(rows))
    colours = plt.get_cmap("tab20").colors
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(cols))]
        ax.bar(
            xs,
            [table[row].get(c, 0.0) for c in cols],
            width,
            label=row,
            color=colours[i % len(colours)],
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols)
    top = max((v for r in table.values() for v in r.values()), default=0.0)
    ax.set_ylim(0, max(1.0, top * 1.15))
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_report(
    cells,
    out_prefix: Path,
    suite: str,
    template: str,
    baseline: Path | None = None,
    band: Band = 0.5,
    extra: dict | None = None,
    recipes: dict[str, str] | None = None,
    paper_rows: dict[str, str] | None = None,
    fingerprints: Path | None = None,
    sweeps: dict[str, Path] | None = None,
    blocks: dict[str, str] | None = None,
    block_titles: dict[str, str] | None = None,
) -> dict:
    """Write out_prefix.{md,csv,json,png}; return the JSON record. `suite` is a suite name or file:
    its benchmarks are the columns, its headlines the metrics, its reference table the paper's."""
    out_prefix = Path(out_prefix)
    suite_def = get_suite(suite)
    cols = suite_def.columns
    headlines = {c: suite_def.benchmark(c).headline for c in cols}
    table = build_table(cells, suite_def)
    ref = suite_def.reference_file()
    paper = read_table(ref) if ref else None
    base = read_table(baseline) if baseline else None
    title = f"Table 1 ({suite_def.name} suite, template policy {template})"
    others = ", ".join(f"{c} = {h}" for c, h in headlines.items() if h != "pass@1")
    notes = [
        f"Percent; headline metric pass@1{f' ({others})' if others else ''}; "
        f"average = mean of the {len(cols)} columns. Template policy: `{template}`."
    ]
    if paper:
        notes.append(
            "Beside each cell: the paper's number and the difference (run-to-run noise about ±0.5 pt, more on AIME)."
        )
    if recipes:
        notes.append(
            "recipe: how a row was computed: the paper's authors' recipe, or the deviation from it "
            "(a variant row is compared with the paper's row of its method)."
        )
    if base:
        what = f"{band} pt" if not isinstance(band, dict) else "their per-cell band"
        notes.append(
            f"Compared with baseline {baseline}: cells that moved more than {what} are marked **moved**."
        )
    changes = compare(table, base, band) if base else []
    record = {
        "suite": suite_def.name,
        "columns": headlines,
        "template_policy": template,
        "table": table,
        "paper": paper,
        "recipes": recipes or {},
        "paper_rows": paper_rows or {},
        "blocks": blocks or {},
        "baseline": {"path": str(baseline), "band": band, "table": base} if base else None,
        "moved": sorted(
            [m["row"], m["column"], m["delta"]] for m in changes if m["column"] is not None
        ),
        "baseline_rows_changed": [[m["row"], m["change"]] for m in changes if m["column"] is None],
        "template_effect": {
            row: {
                c: round(v - table[row.split("@")[0]][c], 1)
                for c, v in vals.items()
                if c in table[row.split("@")[0]]
            }
            for row, vals in table.items()
            if "@" in row and row.split("@")[0] in table
        },
        "scores": {
            row: {c: str(Path(p).resolve()) for c, p in files.items()}
            for row, files in cells.items()
        },
        **(extra or {}),
    }
    weights, record["fingerprints"] = (
        fingerprint_report(fingerprints, {row for row, _, _ in record["moved"]}, set(table))
        if fingerprints
        else ([], {})
    )
    swept, record["sweeps"] = sweep_report(sweeps or {}, table, out_prefix.parent / "sweeps")
    weights += swept
    md = to_markdown(
        table, cols, title, notes, paper, base, band, recipes, paper_rows, blocks, block_titles
    )
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_prefix.with_suffix(".csv"), to_csv(table, cols))
    write_text_atomic(out_prefix.with_suffix(".md"), md + "".join(f"{x}\n" for x in weights))
    plot(table, cols, out_prefix.with_suffix(".png"), title)
    write_text_atomic(out_prefix.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record
