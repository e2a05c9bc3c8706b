"""HumanEval / HumanEval+ / MBPP+ with EvalPlus's own checker, inside the project's sandbox.

Expected outputs come from EvalPlus running the canonical solutions (cached by EvalPlus, keyed by a
hash of the problems). Every candidate runs in its own sandbox (`evals.sandbox`), where a small
runner makes the calls `evalplus.evaluate.check_correctness` makes (`untrusted_check` on the base,
then the plus tests, with EvalPlus's time and memory limits), so statuses are EvalPlus's own. A
candidate whose sandbox dies (it kills the runner, runs past the time bound, ...) fails alone, with
the sandbox's status in `base_status` and the reason in `errors`. HumanEval = base tests;
HumanEval+ and MBPP+ = base and plus tests; an MBPP+ item (`evalplus_dataset: mbpp` in its
reference, set by `evals.data.mbpp_items`) runs with EvalPlus's MBPP oracles (`dataset="mbpp"`, the
tasks whose output need only be non-None). A program is checked once per process against the same
tests: identical programs in one file, in other files of a batch (`evals.score.score_batch`), and a
HumanEval check after a HumanEval+ one whose run ended normally (its base status is the same).

EvalPlus 0.3.1's special oracle for `find_zero` (HumanEval/32) `continue`s before recording the
test as passed, so every candidate, the canonical solution included, comes back "fail". For that
one task the program gets a small appended checker that applies the same oracle
(|poly(xs, x)| <= atol) and returns True, and EvalPlus's generic path compares it with True, still
inside the sandbox.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from evals import sandbox
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


RUNNER = """
import pickle, sys
job = pickle.loads(sys.stdin.buffer.read())
from evalplus.eval import untrusted_check
problem, expected = job["problem"], job["expected"]
status = {}
for part in job["parts"]:
    status[part] = untrusted_check(
        job["dataset"], job["program"], problem[part + "_input"], problem["entry_point"],
        expected=expected[part], atol=problem["atol"], ref_time=expected[part + "_time"],
        fast_check=True,
    )[0]
emit(status)
"""
PER_CHECK_BOUND = 60 + 4  # EvalPlus's own bound on one untrusted_check (EVALPLUS_TIMEOUT_PER_TASK)


def _check(key, problem, expected, plus) -> dict:
    """EvalPlus statuses {"base": ..., "plus": ...} of one program, or the sandbox's failure
    {"base": status, "plus": status, "error": reason}; find_zero routed around EvalPlus's defect."""
    tid, program = key
    dataset = problem.get("evalplus_dataset", "humaneval")
    if dataset == "humaneval" and problem["entry_point"] == "find_zero":
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
    parts = ["base", "plus"] if plus else ["base"]
    job = {"program": program, "problem": problem, "expected": expected, "parts": parts,
           "dataset": dataset}  # fmt: skip
    bound = 5 + sum(min(PER_CHECK_BOUND, _time_bound(expected[f"{p}_time"])) for p in parts)
    out = sandbox.run_python(RUNNER, pickle.dumps(job), timeout=bound, memory=_memory())
    if out.status == "ok":
        return out.result
    status = {p: out.status for p in parts}
    return dict(status, error=f"{out.status}: {out.detail.strip()[-300:]}")


_CHECKED: dict[tuple, dict] = {}  # (parts, digest of their tests, program) -> statuses


def _tests_digest(problem: dict, expected: dict, parts: tuple) -> str:
    """What a check's outcome depends on besides the program: entry point, tolerance, and per part
    the inputs, expected outputs and reference times."""
    tests = [problem.get("evalplus_dataset", "humaneval"), problem["entry_point"], problem["atol"]]
    tests += [(problem[f"{p}_input"], expected[p], expected[f"{p}_time"]) for p in parts]
    return hashlib.sha256(pickle.dumps(tests)).hexdigest()


def _checked(key, problem, expected, plus) -> dict:
    """`_check`, once per (tests, program) in this process."""
    parts = ("base", "plus") if plus else ("base",)
    memo = (parts, _tests_digest(problem, expected, parts), key[1])
    if memo not in _CHECKED:
        res = _check(key, problem, expected, plus)
        _CHECKED[memo] = res
        if plus and "error" not in res:  # a normal run: its base status is a base-only run's
            base = (("base",), _tests_digest(problem, expected, ("base",)), key[1])
            _CHECKED.setdefault(base, {"base": res["base"]})
    return _CHECKED[memo]


def _time_bound(ref_time: list) -> float:
    """untrusted_check's wall bound for these reference times (its time limits summed, + 3 s)."""
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    return 3 + sum(max(DEFAULT_MIN_TIME_LIMIT, DEFAULT_GT_TIME_LIMIT_FACTOR * t) for t in ref_time)


def _memory() -> int | None:
    """Address space for the runner: EvalPlus's own limit for the candidate, plus room for itself."""
    from evalplus.eval import query_maximum_memory_bytes

    limit = query_maximum_memory_bytes()
    return None if limit is None else limit + (2 << 30)


def _problems(items: dict) -> dict:
    out = {}
    for tid, item in items.items():
        row = dict(item.reference)
        row["plus_input"] = row.get("plus_input") or []
        out[tid] = row
    return out


def _run(items: dict, samples: list[dict], plus: bool) -> tuple[dict, list[dict]]:
    from evalplus.eval import PASS
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
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
    mbpp = any(p.get("evalplus_dataset") == "mbpp" for p in problems.values())
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if mbpp else []
    expected = get_groundtruth(problems, f"mergeeval-{digest}", not_none)
    jobs = {}
    for row in samples:
        p = problems[row["id"]]
        for completion in row["completions"]:
            jobs.setdefault((row["id"], assemble(p["prompt"], completion, p["entry_point"])), None)
    with ThreadPoolExecutor(max_workers=sandbox.workers()) as pool:
        futures = {
            key: pool.submit(_checked, key, problems[key[0]], expected[key[0]], plus)
            for key in jobs
        }
        for key, fut in tqdm(futures.items(), desc="evalplus", unit="program", disable=None):
            res = fut.result()
            base_ok = res["base"] == PASS
            jobs[key] = (
                base_ok,
                base_ok and (not plus or res["plus"] == PASS),
                res["base"],
                res.get("plus"),
                res.get("error"),
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
                "errors": [r[4] for r in results],
            }
        )
        n.append(len(ok))
        c.append(sum(ok))
    return passk_metrics(n, c, [k for k in KS if k <= min(n)]), per_item


def score_base(items: dict, samples: list[dict]):
    return _run(items, samples, plus=False)


def score_plus(items: dict, samples: list[dict]):
    return _run(items, samples, plus=True)
