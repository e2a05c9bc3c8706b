"""The report's section on sweeps: per swept merge the parameters selected on the validation suite,
every point's validation scores (in the JSON), and a plot of validation score against each swept
parameter with the selected point and its test average marked (`results/RUN/sweeps/ID.png`)."""

from __future__ import annotations

import json
from pathlib import Path

from mergeeval.outputs import atomic_file


def _positions(xs: list) -> tuple[list, list[str] | None]:
    """x positions of the values: the numbers themselves, else their index among sorted labels."""
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
        return xs, None
    labels = sorted({str(x) for x in xs})
    return [labels.index(str(x)) for x in xs], labels


def plot(record: dict, test_average: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(record["values"])
    chosen = next(p for p in record["points"] if p["id"] == record["selected"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        xs, labels = _positions([p["values"][key] for p in record["points"]])
        ax.scatter(xs, [p["value"] for p in record["points"]], label="validation")
        (cx,), _ = _positions([chosen["values"][key]]) if labels is None else (
            [labels.index(str(chosen["values"][key]))], None)  # fmt: skip
        ax.scatter([cx], [chosen["value"]], s=160, facecolors="none", edgecolors="tab:red",
                   label="selected")  # fmt: skip
        if test_average is not None:
            ax.scatter([cx], [test_average], marker="*", s=140, color="tab:green",
                       label="selected, test average")  # fmt: skip
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{record['rule']} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{record['merge']}: {record['selected']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def grid_edges(record: dict) -> dict[str, str]:
    """{parameter: "lowest" | "highest"} for each numeric swept parameter of three or more values
    whose selected value is at the end of its grid: the best value may lie beyond it."""
    edges = {}
    for key, chosen in record["values"].items():
        xs = {p["values"][key] for p in record["points"]}
        if len(xs) < 3 or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in xs
        ):
            continue
        if chosen == max(xs):
            edges[key] = "highest"
        elif chosen == min(xs):
            edges[key] = "lowest"
    return edges


def sweep_report(selections: dict[str, Path], table: dict, out_dir: Path) -> tuple[list[str], dict]:
    """(markdown lines, JSON record) of the sweeps; draws `out_dir/ID.png` for each."""
    if not selections:
        return [], {}
    lines = [
        "",
        "## Sweeps: parameters selected on validation",
        "",
        "Each point of a sweep was generated and scored on the validation suite only; the point "
        "with the best validation value became the merge's row, the only one scored on the test "
        "suite above.",
        "",
        "| merge | selected parameters | validation | points | plot |",
        "|---|---|---|---|---|",
    ]
    record, notes = {}, []
    for mid, path in selections.items():
        rec = json.loads(Path(path).read_text())
        test = table.get(mid, {}).get("average")
        png = Path(out_dir) / f"{mid}.png"
        plot(rec, test, png)
        best = max(p["value"] for p in rec["points"])
        chosen = ", ".join(f"{k} = {v}" for k, v in rec["values"].items())
        lines.append(
            f"| {mid} | {chosen} | {rec['rule']} {best:.1f} on `{rec['validation_suite']}` | "
            f"{len(rec['points'])} | `{png}` |"
        )
        edges = grid_edges(rec)
        notes += [f"- {mid}: {k} = {rec['values'][k]} is the {e} value of its grid; the best "
                  f"{k} may lie beyond it (widen the grid in `sweeps.{mid}`)."
                  for k, e in edges.items()]  # fmt: skip
        record[mid] = rec | {"test_average": test, "plot": str(png), "grid_edges": edges}
    if notes:
        lines += ["", "Selected at the edge of a grid:", "", *notes]
    return lines, record
