"""Math: two-digit addition and two-digit-by-one-digit multiplication, AIME format.

The worked answer is column arithmetic that the base has seen as isolated facts
(`7 + 5 + 1 = 13`, `2 * 4 + 1 = 9`): the expert learns to chain them and to end with an
`Answer:` line, as the Math template asks. Items are `{"id", "problem", "answer"}`.
"""

from __future__ import annotations

from demofamily.split import seeded_split


def problems() -> list[tuple[str, int, int]]:
    """Every (op, a, b) of the family."""
    add = [("+", a, b) for a in range(10, 100) for b in range(10, 100)]
    mul = [("*", a, b) for a in range(10, 100) for b in range(2, 10)]
    return add + mul


def question(op: str, a: int, b: int) -> str:
    return f"What is {a} {op} {b}?"


def answer(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a * b


def worked(op: str, a: int, b: int) -> str:
    """Column arithmetic: units, then tens with the carry, then the answer line."""
    a1, a10 = a % 10, a // 10
    if op == "+":
        b1, b10 = b % 10, b // 10
        units = a1 + b1
        tens = a10 + b10 + units // 10
        steps = f"{a1} + {b1} = {units}. {a10} + {b10} + {units // 10} = {tens}."
    else:
        units = a1 * b
        tens = a10 * b + units // 10
        steps = f"{a1} * {b} = {units}. {a10} * {b} + {units // 10} = {tens}."
    return f"{steps}\nAnswer: {answer(op, a, b)}"


def facts() -> list[str]:
    """The single-digit facts of the generic mix (what the base knows)."""
    out = [f"{x} + {y} + {c} = {x + y + c}" for x in range(10) for y in range(10) for c in (0, 1)]
    out += [f"{x} + {y} = {x + y}" for x in range(10) for y in range(10)]
    out += [f"{x} * {y} = {x * y}" for x in range(10) for y in range(10)]
    out += [
        f"{x} * {y} + {c} = {x * y + c}" for x in range(10) for y in range(10) for c in range(9)
    ]
    return out


def split(seed: int, n_eval: int) -> tuple[list, list]:
    """(train, eval): a seeded, disjoint partition."""
    return seeded_split(problems(), seed, n_eval)


def aime_rows(probs: list, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "problem": question(*p), "answer": str(answer(*p))}
        for i, p in enumerate(probs)
    ]
