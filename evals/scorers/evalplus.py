"""HumanEval / HumanEval+ with EvalPlus's own sandboxed checker.

Expected outputs come from EvalPlus running the canonical solutions (cached by EvalPlus, keyed by a
hash of the problems); every candidate runs through `evalplus.evaluate.check_correctness`, which
executes it in a separate, resource-limited process, never in this one. Identical (task, solution)
pairs are checked once. HumanEval = base tests; HumanEval+ = base and plus tests.

EvalPlus 0.3.1's special oracle for `find_zero` (HumanEval/32) `continue`s before recording the
test as passed, so every candidate, the canonical solution included, comes back "fail". For that
one task the program gets a small appended checker that applies the same oracle
(|poly(xs, x)| <= atol) and returns True, and EvalPlus's generic path compares it with True, still
inside EvalPlus's sandbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from evals.errors import EvalInputError
from evals.scorers.passk import passk_metrics

KS = (1, 10, 100)


def assemble(prompt: str, completion: str, entry_point: str) -> str:
    """Program to test: a function body is appended to the prompt; a whole function (prompt
    included or not) is appended after it, so both forms score the same."""
    code = completion
    if "```" in code:
        fenced = re.match(r"\s*```[a-zA-Z0-9]*\n(.*?)(```|$)", code, re.S)
        code = fenced.group(1) if fenced else code.split("```", 1)[0]
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return prompt + "\n" + code
    return prompt + code


FIND_ZERO_CHECK = """

def _mergeeval_find_zero_ok(xs, atol):
    import math
    x = find_zero(list(xs))
    return abs(sum(c * math.pow(x, i) for i, c in enumerate(xs))) <= atol
"""


def _check(key, problem, expected, plus):
    """check_correctness, with the find_zero oracle routed around EvalPlus 0.3.1's defect."""
    from evalplus.evaluate import check_correctness

    tid, program = key
    if problem["entry_point"] == "find_zero":
        atol = problem["atol"] or 1e-6
        problem = dict(
            problem,
            entry_point="_mergeeval_find_zero_ok",
            base_input=[[x[0], atol] for x in problem["base_input"]],
            plus_input=[[x[0], atol] for x in problem["plus_input"]],
            atol=0,
        )
        expected = dict(
            expected,
            base=[True] * len(problem["base_input"]),
            plus=[True] * len(problem["plus_input"]),
        )
        program = program + FIND_ZERO_CHECK
    return check_correctness("humaneval", 0, problem, program, expected, not plus, True)


def _problems(items: dict) -> dict:
    out = {}
    for tid, item in items.items():
        row = dict(item.reference)
        row["plus_input"] = row.get("plus_input") or []
        out[tid] = row
    return out


def _run(items: dict, samples: list[dict], plus: bool) -> tuple[dict, list[dict]]:
    from evalplus.eval import PASS
    from evalplus.evaluate import get_groundtruth

    if plus:
        no_plus = [tid for tid, it in items.items() if it.reference.get("plus_input") is None]
        if no_plus:
            raise EvalInputError(
                f"HumanEval+ needs EvalPlus plus tests, but the data has none for {no_plus[0]} "
                "(original HumanEval format); pass the EvalPlus HumanEval+ release file as --data"
            )
    problems = _problems(items)
    digest = hashlib.sha256(json.dumps(problems, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]
    expected = get_groundtruth(problems, f"mergeeval-{digest}", [])
    jobs = {}
    for row in samples:
        p = problems[row["id"]]
        for completion in row["completions"]:
            jobs.setdefault((row["id"], assemble(p["prompt"], completion, p["entry_point"])), None)
    workers = int(os.environ.get("EVALPLUS_WORKERS", os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            key: pool.submit(_check, key, problems[key[0]], expected[key[0]], plus) for key in jobs
        }
        for key, fut in tqdm(futures.items(), desc="evalplus", unit="program", disable=None):
            res = fut.result()
            base_ok = res["base"][0] == PASS
            jobs[key] = (
                base_ok,
                base_ok and (not plus or res["plus"][0] == PASS),
                res["base"][0],
                res.get("plus", (None,))[0],
            )
    per_item, n, c = [], [], []
    for row in samples:
        p = problems[row["id"]]
        results = [
            jobs[(row["id"], assemble(p["prompt"], x, p["entry_point"]))]
            for x in row["completions"]
        ]
        ok = [r[1] for r in results]
        per_item.append(
            {
                "id": row["id"],
                "correct": ok,
                "base_status": [r[2] for r in results],
                "plus_status": [r[3] for r in results],
            }
        )
        n.append(len(ok))
        c.append(sum(ok))
    return passk_metrics(n, c, [k for k in KS if k <= min(n)]), per_item


def score_base(items: dict, samples: list[dict]):
    return _run(items, samples, plus=False)


def score_plus(items: dict, samples: list[dict]):
    return _run(items, samples, plus=True)
