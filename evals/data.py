"""Benchmark items from a local file in the upstream format, the project's fixtures, or the hub.

Item ids: AIME the 0-based position in the data; HumanEval and MBPP+ the `task_id`; IFEval the
`key`.
HumanEval data may be the EvalPlus HumanEval+ release (base_input/plus_input) or the original
HumanEval (a `test` function); for the latter the base inputs are recorded by running its
`check(candidate)` on the canonical solution in the sandbox (`evals.sandbox`), and there are no
plus tests.
"""

from __future__ import annotations

import json
import os
import random
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


def mbpp_items(rows: list[dict], path) -> list[Item]:
    """EvalPlus's MBPP+ release rows: the inputs that JSON cannot hold (tuples, sets, complex
    numbers) restored with EvalPlus's own deserializer, as its `get_mbpp_plus` does."""
    from evalplus.data.mbpp import mbpp_deserialize_inputs

    items = []
    for i, row in enumerate(rows):
        _need(path, i, row, ["task_id", "prompt", "entry_point", "canonical_solution", "base_input",
                             "plus_input", "atol"])  # fmt: skip
        tid = row["task_id"]
        row = dict(
            row,
            base_input=mbpp_deserialize_inputs(tid, row["base_input"]),
            plus_input=mbpp_deserialize_inputs(tid, row["plus_input"]),
            evalplus_dataset="mbpp",
        )
        items.append(Item(tid, {"prompt": row["prompt"]}, row))
    return items


def ifeval_items(rows: list[dict], path) -> list[Item]:
    """IFEval rows; `kwargs` may be a JSON string (IFEval-style datasets such as
    argilla/ifeval-like-data store it so), and None-valued arguments are dropped."""
    items = []
    for i, row in enumerate(rows):
        _need(path, i, row, ["key", "prompt", "instruction_id_list", "kwargs"])
        kwargs = row["kwargs"]
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs)
            except ValueError:
                raise EvalInputError(f"{path}: item {i}: kwargs is not JSON") from None
        if len(kwargs) != len(row["instruction_id_list"]):
            raise EvalInputError(
                f"{path}: item {i}: {len(kwargs)} kwargs for "
                f"{len(row['instruction_id_list'])} instructions; expected one per instruction"
            )
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
        row = {k: row[k] for k in ("key", "prompt", "instruction_id_list")} | {"kwargs": kwargs}
        items.append(Item(int(row["key"]), {"prompt": row["prompt"]}, row))
    return items


PARSERS = {
    "aime": aime_items,
    "humaneval": humaneval_items,
    "mbpp": mbpp_items,
    "ifeval": ifeval_items,
}


def _release_origin(name: str, version: str, path) -> str:
    """An EvalPlus release's origin: its version, or the file EvalPlus's NAME_OVERRIDE_PATH
    switch read instead (a copy for a machine without GitHub access)."""
    override = os.environ.get(f"{name}_OVERRIDE_PATH")
    kind = "" if name == "HUMANEVAL" else "mbpp "
    if override:
        return f"evalplus {kind}{version} from {Path(override).resolve()} ({name}_OVERRIDE_PATH)"
    return f"evalplus {kind}{version}"


def _hub_rows(bench: Benchmark, revision: str | None = None) -> tuple[list[dict], str]:
    """Rows from the default source (network) and their origin: a HF dataset at the commit its
    revision (or `revision`: the run's locked commit) names (`repo@commit`), or the EvalPlus
    release."""
    src = bench.source
    if "evalplus_release" in src:
        from evalplus.data.humaneval import _ready_human_eval_plus_path

        path = _ready_human_eval_plus_path(version=src["evalplus_release"])
        return read_jsonl(Path(path)), _release_origin("HUMANEVAL", src["evalplus_release"], path)
    if "evalplus_mbpp_release" in src:
        from evalplus.data.mbpp import _ready_mbpp_plus_path

        path = _ready_mbpp_plus_path(version=src["evalplus_mbpp_release"])
        return read_jsonl(Path(path)), _release_origin("MBPP", src["evalplus_mbpp_release"], path)
    import datasets

    repo = src["hf_dataset"]
    commit = resolve_commit(repo, revision or src.get("revision") or "main", "dataset")
    ds = datasets.load_dataset(
        repo, src.get("config"), revision=commit, split=src.get("split", "train")
    )
    rows = select_rows([dict(r) for r in ds], src)
    return rows, f"{repo}@{commit}"


def select_rows(rows: list[dict], src: dict) -> list[dict]:
    """The rows a hub source names: `filter` keeps rows whose column equals a value or is one of a
    list of values (compared as text: `year: [2021, 2022]`); `sample: {n, seed}` then keeps a seeded
    random subset of n rows, in their order in the data (the same rows on every machine)."""
    for key, value in (src.get("filter") or {}).items():
        wanted = {str(v) for v in value} if isinstance(value, list) else {str(value)}
        rows = [r for r in rows if str(r.get(key)) in wanted]
    sample = src.get("sample")
    if sample and sample["n"] < len(rows):
        keep = sorted(random.Random(sample.get("seed", 0)).sample(range(len(rows)), sample["n"]))
        rows = [rows[i] for i in keep]
    return rows


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
