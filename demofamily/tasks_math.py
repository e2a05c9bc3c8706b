"""Math: two- and three-digit addition, two- and three-digit-by-one-digit multiplication, AIME format.

The worked answer is column arithmetic that the base has seen as isolated facts
(`7 + 5 + 1 = 13`, `2 * 4 + 1 = 9`): the expert learns to chain them, one column per step, and
to end with an `Answer:` line, as the Math template asks. Three-digit items take one more step
and carry, so a merge that blurs the expert's arithmetic loses them first. Items are
`{"id", "problem", "answer"}`.
"""

from __future__ import annotations

import random

from demofamily.split import Split, seeded_split

N_ADD3 = 9000  # three-digit sums in the pool: a seeded sample of the 810,000


def problems() -> list[tuple[str, int, int]]:
    """Every (op, a, b) of the family: all two-digit sums and products, all three-digit-by-one-digit
    products, and a seeded sample of three-digit sums."""
    add = [("+", a, b) for a in range(10, 100) for b in range(10, 100)]
    mul = [("*", a, b) for a in range(10, 1000) for b in range(2, 10)]
    rng = random.Random(1000)
    add3 = sorted({(rng.randrange(100, 1000), rng.randrange(100, 1000)) for _ in range(N_ADD3)})
    return add + mul + [("+", a, b) for a, b in add3]


def hard(p: tuple[str, int, int]) -> bool:
    """A three-digit item: only the Math expert's fine-tuning shows these (never the base)."""
    return p[1] >= 100


def question(op: str, a: int, b: int) -> str:
    return f"What is {a} {op} {b}?"


def answer(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a * b


def worked(op: str, a: int, b: int) -> str:
    """Column arithmetic: one step per digit of `a`, units first, each carrying into the next,
    then the answer line (`7 + 5 = 12. 4 + 3 + 1 = 8.` for 47 + 35)."""
    digits = [int(c) for c in reversed(str(a))]
    other = [int(c) for c in reversed(str(b))] if op == "+" else []
    steps, carry = [], None
    for i, x in enumerate(digits):
        y = other[i] if i < len(other) else 0
        term = f"{x} + {y}" if op == "+" else f"{x} * {b}"
        value = (x + y if op == "+" else x * b) + (carry or 0)
        steps.append(f"{term}{'' if carry is None else f' + {carry}'} = {value}.")
        carry = value // 10
    return f"{' '.join(steps)}\nAnswer: {answer(op, a, b)}"


def facts() -> list[str]:
    """The single-digit facts of the generic mix (what the base knows)."""
    out = [f"{x} + {y} + {c} = {x + y + c}" for x in range(10) for y in range(10) for c in (0, 1)]
    out += [f"{x} + {y} = {x + y}" for x in range(10) for y in range(10)]
    out += [f"{x} * {y} = {x * y}" for x in range(10) for y in range(10)]
    out += [
        f"{x} * {y} + {c} = {x * y + c}" for x in range(10) for y in range(10) for c in range(9)
    ]
    return out


def split(seed: int, n_eval: int, n_dev: int = 0) -> Split:
    """(train, dev, eval): a seeded, disjoint partition."""
    return seeded_split(problems(), seed, n_eval, n_dev)


def aime_rows(probs: list, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "problem": question(*p), "answer": str(answer(*p))}
        for i, p in enumerate(probs)
    ]
