"""Benchmark items from a local file in the upstream format, the project's fixtures, or the hub.

Item ids: AIME the 0-based position in the data; HumanEval the `task_id`; IFEval the `key`.
HumanEval data may be the EvalPlus HumanEval+ release (base_input/plus_input) or the original
HumanEval (a `test` function); for the latter the base inputs are recorded by running its
`check(candidate)` on the canonical solution in the sandbox (`evals.sandbox`), and there are no
plus tests.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from evals import sandbox
from evals.errors import EvalInputError
from evals.registry import FIXTURES, Benchmark
from evals.samples import read_jsonl
from mergeeval.hub import resolve_commit


@dataclass
class Item:
    id: int | str
    fields: dict  # values available to the prompt template (problem, prompt, ...)
    reference: dict = field(default_factory=dict)  # what the scorer needs


def _need(path, i, row, keys):
    missing = [k for k in keys if k not in row]
    if missing:
        raise EvalInputError(f"{path}: item {i} lacks {missing}; expected the upstream format")


def aime_items(rows: list[dict], path) -> list[Item]:
    items = []
    for i, row in enumerate(rows):
        problem = row.get("problem", row.get("question"))
        if problem is None or "answer" not in row:
            raise EvalInputError(f"{path}: item {i} needs 'problem' (or 'question') and 'answer'")
        items.append(Item(i, {"problem": problem}, {"answer": str(row["answer"])}))
    return items


RECORD_INPUTS = textwrap.dedent(
    """
    import json, sys, copy
    task = json.loads(sys.stdin.read())
    ns = {}
    exec(task["prompt"] + task["canonical_solution"], ns)
    fn = ns[task["entry_point"]]
    calls = []
    def candidate(*args):
        calls.append(copy.deepcopy(list(args)))
        return fn(*args)
    exec(task["test"], ns)
    ns["check"](candidate)
    emit(calls)
    """
)


def _record_base_inputs(row: dict, path) -> list:
    """Inputs the original HumanEval `check` passes to the candidate (the data's code, sandboxed)."""
    out = sandbox.run_python(RECORD_INPUTS, json.dumps(row).encode(), timeout=120)
    if out.status != "ok":
        raise EvalInputError(
            f"{path}: could not record the test inputs of {row['task_id']} "
            f"({out.status}: {out.detail.strip()[-500:]}); check its canonical_solution and test"
        )
    return out.result


def humaneval_items(rows: list[dict], path) -> list[Item]:
    items = []
    for i, row in enumerate(rows):
        _need(path, i, row, ["task_id", "prompt", "entry_point", "canonical_solution"])
        if "base_input" not in row:
            _need(path, i, row, ["test"])
            # EvalPlus checks find_zero (HumanEval/32) by |poly(x)| <= atol; the original test's bound is 1e-4
            atol = 1e-4 if row["entry_point"] == "find_zero" else 0
            row = dict(
                row,
                base_input=_record_base_inputs(row, path),
                plus_input=None,
                atol=atol,
                contract="",
            )
        items.append(Item(row["task_id"], {"prompt": row["prompt"]}, row))
    return items


def ifeval_items(rows: list[dict], path) -> list[Item]:
    items = []
    for i, row in enumerate(rows):
        _need(path, i, row, ["key", "prompt", "instruction_id_list", "kwargs"])
        items.append(Item(int(row["key"]), {"prompt": row["prompt"]}, row))
    return items


PARSERS = {"aime": aime_items, "humaneval": humaneval_items, "ifeval": ifeval_items}


def _hub_rows(bench: Benchmark, revision: str | None = None) -> tuple[list[dict], str]:
    """Rows from the default source (network) and their origin: a HF dataset at the commit its
    revision (or `revision`: the run's locked commit) names (`repo@commit`), or the EvalPlus
    release."""
    src = bench.source
    if "evalplus_release" in src:
        from evalplus.data.humaneval import _ready_human_eval_plus_path

        path = _ready_human_eval_plus_path(version=src["evalplus_release"])
        return read_jsonl(Path(path)), f"evalplus {src['evalplus_release']}"
    import datasets

    repo = src["hf_dataset"]
    commit = resolve_commit(repo, revision or src.get("revision") or "main", "dataset")
    ds = datasets.load_dataset(repo, revision=commit, split=src.get("split", "train"))
    rows = [dict(r) for r in ds]
    for key, value in (src.get("filter") or {}).items():
        rows = [r for r in rows if str(r.get(key)) == str(value)]
    return rows, f"{repo}@{commit}"


def load_items(
    bench: Benchmark,
    data: Path | str | None = None,
    source: str = "hf",
    revision: str | None = None,
) -> tuple[list[Item], str]:
    """Items and a description of where they came from: `data` file, fixture, or hub (at
    `revision` when given, else the benchmark's own)."""
    if data is not None:
        rows, origin = read_jsonl(Path(data)), str(Path(data).resolve())
    elif source == "fixture":
        rows, origin = read_jsonl(FIXTURES / bench.fixture), f"fixture {bench.fixture}"
    else:
        rows, origin = _hub_rows(bench, revision)
    items = PARSERS[bench.format](rows, origin)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise EvalInputError(f"{origin}: duplicate item ids")
    return items, origin
