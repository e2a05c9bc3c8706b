"""AIME: the last \\boxed{...}, else the last `Answer:` line, compared with the reference as integers.

Non-plain answers (`\\frac{50}{2}`, `$25$`, `\\text{25}`) are parsed by math-verify and accepted when
they are integers. pass@1 is the mean correctness over samples; pass@k for k = 1, 2, 4, ..., n.
"""

from __future__ import annotations

import re

from evals.scorers.passk import passk_metrics, powers_of_two

_ANSWER_LINE = re.compile(r"Answer\s*:\s*(.+)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    lines = _ANSWER_LINE.findall(text)
    return lines[-1].strip() if lines else None


def to_int(answer: str | None) -> int | None:
    if answer is None:
        return None
    s = answer.strip().strip("$").strip().rstrip(".").replace(",", "").replace("\\!", "")
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s).strip()
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    from math_verify import LatexExtractionConfig, parse

    for value in parse(f"${s}$", extraction_config=[LatexExtractionConfig()]):
        try:
            if value == int(value):
                return int(value)
        except (TypeError, ValueError):
            continue
    return None


def score(items: dict, samples: list[dict]) -> tuple[dict, list[dict]]:
    per_item, n, c = [], [], []
    for row in samples:
        ref = to_int(items[row["id"]].reference["answer"])
        got = [to_int(extract_answer(x)) for x in row["completions"]]
        ok = [g is not None and g == ref for g in got]
        per_item.append({"id": row["id"], "answer": ref, "extracted": got, "correct": ok})
        n.append(len(ok))
        c.append(sum(ok))
    return passk_metrics(n, c, powers_of_two(min(n))), per_item
