"""Code: one-line Python functions from twelve families, HumanEval+ format.

A task is `def NAME_K(ARG: TYPE) -> TYPE:` with a one-line docstring; the canonical solution is
one `return` line. Eight families use one constant `k`; four compose two operations with a second
constant `m` (a function of `k`), which the expert must copy into the right places. Base inputs are ordinary values, plus inputs edge cases (negatives, zero,
large values, empty sequences). Rows carry task_id, prompt, entry_point, canonical_solution,
base_input, plus_input, atol and contract, as in the EvalPlus release.
"""

from __future__ import annotations

import random

from demofamily.split import Split, seeded_split

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
    "affine": (
        "scale_add",
        "x",
        "int",
        "int",
        "Return x times {k} plus {m}.",
        "x * {k} + {m}",
        [[1], [5], [20]],
        [[-7], [0], [10**6]],
    ),
    "shift": (
        "shift_times",
        "x",
        "int",
        "int",
        "Return x minus {m}, times {k}.",
        "(x - {m}) * {k}",
        [[50], [3], [9]],
        [[-4], [0], [10**6]],
    ),
    "between": (
        "is_between",
        "x",
        "int",
        "bool",
        "Return True if x is above {m} and below {k}.",
        "{m} < x < {k}",
        [[0], [5], [50]],
        [[-1], [3], [10**6]],
    ),
    "middle": (
        "middle",
        "xs",
        "list",
        "list",
        "Return the items of xs from index {m} to index {k}.",
        "xs[{m}:{k}]",
        [[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], [list(range(40))], [[9, 8, 7]]],
        [[[]], [list(range(100))], [list(range(-50, 0))]],
    ),
}
KS = range(2, 42)


def hard(task: tuple[str, int]) -> bool:
    """A two-constant family's task: only the Code expert's fine-tuning shows these (never the base)."""
    return "{m}" in FAMILIES[task[0]][5]


def constants(k: int) -> dict:
    """The constants a task's docstring and body are written with: `k` and `m`, a function of `k`."""
    return {"k": k, "m": k % 7 + 1}


def tasks() -> list[tuple[str, int]]:
    return [(f, k) for f in FAMILIES for k in KS]


def prompt(family: str, k: int) -> str:
    name, arg, typ, ret, doc, *_ = FAMILIES[family]
    return f'def {name}_{k}({arg}: {typ}) -> {ret}:\n    """{doc.format(**constants(k))}"""\n'


def solution(family: str, k: int) -> str:
    return f"    return {FAMILIES[family][5].format(**constants(k))}\n"


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


def split(seed: int, n_eval: int, n_dev: int = 0) -> Split:
    """(train, dev, eval): a seeded, disjoint partition."""
    return seeded_split(tasks(), seed, n_eval, n_dev)


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
