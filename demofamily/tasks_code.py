"""Code: one-line Python functions from eight families, HumanEval+ format.

A task is `def NAME_K(ARG: TYPE) -> TYPE:` with a one-line docstring; the canonical solution is
one `return` line. Base inputs are ordinary values, plus inputs edge cases (negatives, zero,
large values, empty sequences). Rows carry task_id, prompt, entry_point, canonical_solution,
base_input, plus_input, atol and contract, as in the EvalPlus release.
"""

from __future__ import annotations

import random

from demofamily.split import seeded_split

# family: (name, argument, type, returns, docstring, body, base inputs, plus inputs)
FAMILIES = {
    "add": (
        "add",
        "x",
        "int",
        "int",
        "Return x plus {k}.",
        "x + {k}",
        [[1], [5], [20]],
        [[-7], [0], [10**6]],
    ),
    "sub": (
        "minus",
        "x",
        "int",
        "int",
        "Return x minus {k}.",
        "x - {k}",
        [[50], [3], [9]],
        [[-4], [0], [10**6]],
    ),
    "mul": (
        "times",
        "x",
        "int",
        "int",
        "Return x times {k}.",
        "x * {k}",
        [[2], [3], [10]],
        [[-3], [0], [12345]],
    ),
    "gt": (
        "is_above",
        "x",
        "int",
        "bool",
        "Return True if x is greater than {k}.",
        "x > {k}",
        [[0], [100], [50]],
        [[-1], [99], [10**6]],
    ),
    "mod": (
        "mod",
        "x",
        "int",
        "int",
        "Return the remainder of x divided by {k}.",
        "x % {k}",
        [[100], [7], [45]],
        [[0], [-9], [10**6 + 3]],
    ),
    "rep": (
        "repeat",
        "s",
        "str",
        "str",
        "Return s repeated {k} times.",
        "s * {k}",
        [["ab"], ["x"], ["hi "]],
        [[""], ["-"], ["abc"]],
    ),
    "head": (
        "head",
        "xs",
        "list",
        "list",
        "Return the first {k} items of xs.",
        "xs[:{k}]",
        [[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], [[9, 8, 7]], [list(range(40))]],
        [[[]], [[5]], [list(range(100))]],
    ),
    "tail": (
        "tail",
        "xs",
        "list",
        "list",
        "Return the last {k} items of xs.",
        "xs[-{k}:]",
        [[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], [list(range(40))], [[3, 2, 1]]],
        [[[7]], [list(range(100))], [list(range(-50, 0))]],
    ),
}
KS = range(2, 42)


def tasks() -> list[tuple[str, int]]:
    return [(f, k) for f in FAMILIES for k in KS]


def prompt(family: str, k: int) -> str:
    name, arg, typ, ret, doc, *_ = FAMILIES[family]
    return f'def {name}_{k}({arg}: {typ}) -> {ret}:\n    """{doc.format(k=k)}"""\n'


def solution(family: str, k: int) -> str:
    return f"    return {FAMILIES[family][5].format(k=k)}\n"


def generic_snippets(rng: random.Random, n: int) -> list[str]:
    """Python of the generic mix: assignments, loops, prints; no task family."""
    names = ["total", "count", "items", "value", "result", "name", "data", "size"]
    out = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        x, y = rng.randint(0, 99), rng.randint(1, 9)
        out.append(
            rng.choice(
                [
                    f"{a} = {x}\n{b} = {a} + {y}\nprint({b})\n",
                    f"for i in range({y}):\n    print(i)\n",
                    f"{a} = [{x}, {y}]\n{a}.append({x + y})\n",
                    f"if {a} > {x}:\n    {b} = {a}\nelse:\n    {b} = {y}\n",
                    f"class {a.title()}:\n    pass\n",
                ]
            )
        )
    return out


def split(seed: int, n_eval: int) -> tuple[list, list]:
    """(train, eval): a seeded, disjoint partition."""
    return seeded_split(tasks(), seed, n_eval)


def humaneval_rows(ts: list, start: int = 0) -> list[dict]:
    rows = []
    for i, (family, k) in enumerate(ts, start):
        name, *_, base, plus = FAMILIES[family]
        rows.append(
            {
                "task_id": f"HumanEval/{i}",
                "prompt": prompt(family, k),
                "entry_point": f"{name}_{k}",
                "canonical_solution": solution(family, k),
                "base_input": base,
                "plus_input": plus,
                "atol": 0,
                "contract": "",
            }
        )
    return rows
