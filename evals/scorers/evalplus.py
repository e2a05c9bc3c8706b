"""HumanEval / HumanEval+ with EvalPlus's own sandboxed checker.

Expected outputs come from EvalPlus running the canonical solutions (cached by EvalPlus, keyed by a
hash of the problems); every candidate runs through `evalplus.evaluate.check_correctness`, which
executes it in a separate, resource-limited process, never in this one. Identical (task, solution)
pairs are checked once. HumanEval = base tests; HumanEval+ = base and plus tests.
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


def _problems(items: dict) -> dict:
    out = {}
    for tid, item in items.items():
        row = dict(item.reference)
        row["plus_input"] = row.get("plus_input") or []
        out[tid] = row
    return out


def _run(items: dict, samples: list[dict], plus: bool) -> tuple[dict, list[dict]]:
    from evalplus.eval import PASS
    from evalplus.evaluate import check_correctness, get_groundtruth

    if plus:
        no_plus = [tid for tid, it in items.items() if it.reference.get("plus_input") is None]
        if no_plus:
            raise EvalInputError(
                f"HumanEval+ needs EvalPlus plus tests, but the data has none for {no_plus[0]} "
                "(original HumanEval format); pass the EvalPlus HumanEval+ release file as --data"
            )
    problems = _problems(items)
    digest = hashlib.sha256(json.dumps(problems, sort_keys=True, default=str).encode()).hexdigest()[:16]
    expected = get_groundtruth(problems, f"mergeeval-{digest}", [])
    jobs = {}
    for row in samples:
        p = problems[row["id"]]
        for completion in row["completions"]:
            jobs.setdefault((row["id"], assemble(p["prompt"], completion, p["entry_point"])), None)
    workers = int(os.environ.get("EVALPLUS_WORKERS", os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            key: pool.submit(check_correctness, "humaneval", 0, problems[key[0]], key[1], expected[key[0]], not plus, True)
            for key in jobs
        }
        for key, fut in tqdm(futures.items(), desc="evalplus", unit="program", disable=None):
            res = fut.result()
            base_ok = res["base"][0] == PASS
            jobs[key] = (base_ok, base_ok and (not plus or res["plus"][0] == PASS), res["base"][0], res.get("plus", (None,))[0])
    per_item, n, c = [], [], []
    for row in samples:
        p = problems[row["id"]]
        results = [jobs[(row["id"], assemble(p["prompt"], x, p["entry_point"]))] for x in row["completions"]]
        ok = [r[1] for r in results]
        per_item.append({"id": row["id"], "correct": ok, "base_status": [r[2] for r in results], "plus_status": [r[3] for r in results]})
        n.append(len(ok))
        c.append(sum(ok))
    return passk_metrics(n, c, [k for k in KS if k <= min(n)]), per_item


def score_base(items: dict, samples: list[dict]):
    return _run(items, samples, plus=False)


def score_plus(items: dict, samples: list[dict]):
    return _run(items, samples, plus=True)
