"""AIME: the last \\boxed{...}, else the last `Answer:` line, compared with the reference as integers.

Integers are compared as normalised digit strings (sign, leading zeros), never converted, so any
length is fine. Other answers (`\\frac{50}{2}`, `\\text{25}`, `2^{3}`) up to MAX_CHARS characters
go to math-verify (with its parsing timeout) and count when their value is an integer below
10**MAX_DIGITS, measured without evaluating it exactly. Every sample gets a verdict: one that cannot
be read counts as wrong, with the reason in the item's `errors`. pass@1 is the mean correctness
over samples; pass@k for k = 1, 2, 4, ..., n.
"""

from __future__ import annotations

import re
import threading

from evals.errors import EvalInputError
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


MAX_CHARS = 200  # longest non-plain answer handed to math-verify
MAX_DIGITS = 100  # larger values are not converted (an AIME answer has at most 3 digits)
TIMEOUT_S = 5


def answer_key(answer: str | None) -> tuple[str | None, str | None]:
    """(the integer as a normalised digit string, None), or (None, why the answer is unusable)."""
    if answer is None:
        return None, "no \\boxed{} or 'Answer:' found"
    s = answer.strip().strip("$").strip().rstrip(".").replace(",", "").replace("\\!", "")
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s).strip()
    plain = re.fullmatch(r"([+-]?)(\d+)", s)
    if plain:
        digits = plain.group(2).lstrip("0") or "0"
        return ("-" if plain.group(1) == "-" and digits != "0" else "") + digits, None
    if len(s) > MAX_CHARS:
        return None, f"answer of {len(s)} characters not parsed (limit {MAX_CHARS})"
    try:
        return _math_verify_int(s)
    except Exception as e:  # math-verify or sympy failing on one answer fails that answer only
        return None, f"math-verify: {type(e).__name__}: {str(e)[:200]}"


def _math_verify_int(s: str) -> tuple[str | None, str | None]:
    import sympy
    from math_verify import LatexExtractionConfig, parse
    from math_verify.utils import timeout

    # math-verify's timeouts use SIGALRM, which only the main thread can set
    limit = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None

    @timeout(limit)
    def convert(value):
        approx = value.evalf(30)  # magnitude first: int() of 10^{10^8} would not return
        if not (approx.is_real and approx.is_finite):
            return None, "not a real number"
        if abs(approx) >= sympy.Integer(10) ** MAX_DIGITS:
            return None, f"value of {MAX_DIGITS}+ digits"
        if value == int(value):
            return str(int(value)), None
        return None, "not an integer"

    why = "not an integer"
    values = parse(f"${s}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=limit)
    for value in values:
        if isinstance(value, sympy.Basic):
            try:
                key, why = convert(value)
            except (TypeError, ValueError):
                continue
            if key is not None:
                return key, None
    return None, f"{why}: {s[:50]!r}"


def score(items: dict, samples: list[dict]) -> tuple[dict, list[dict]]:
    per_item, n, c = [], [], []
    for row in samples:
        ref, why = answer_key(items[row["id"]].reference["answer"])
        if ref is None:
            raise EvalInputError(
                f"AIME item {row['id']}: reference answer "
                f"{items[row['id']].reference['answer']!r} is not an integer ({why}); "
                "check the data file"
            )
        got = [answer_key(extract_answer(x)) for x in row["completions"]]
        ok = [key == ref for key, _ in got]
        per_item.append(
            {
                "id": row["id"],
                "answer": ref,
                "extracted": [key for key, _ in got],
                "correct": ok,
                "errors": [why for _, why in got],
            }
        )
        n.append(len(ok))
        c.append(sum(ok))
    return passk_metrics(n, c, powers_of_two(min(n))), per_item
