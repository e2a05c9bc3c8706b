"""AIME: the last \\boxed{...}, else the last `Answer:` line, compared with the reference as integers.

Integers are compared as normalised digit strings (sign, leading zeros), never converted, so any
length is fine. Other answers (`\\frac{50}{2}`, `\\text{25}`, `2^{3}`) up to MAX_CHARS characters
go to math-verify and count when their exact value is an integer below 10**MAX_DIGITS. No answer
can stall or stop a run: math-verify runs in a child process that is killed when an answer takes
longer than TIMEOUT_S (whatever it is doing, from any thread), and there an expression is evaluated
only when a bound from its structure keeps every part under MAX_WORK_DIGITS digits
(9^{9^{9^{9}}} is refused unevaluated). Every sample gets a verdict: one that cannot be read
counts as wrong, with the reason in the item's `errors`. pass@1 is the mean correctness over
samples; pass@k for k = 1, 2, 4, ..., n.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

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
MAX_WORK_DIGITS = 10_000  # bound on every part of an expression before it is evaluated
TIMEOUT_S = 5  # per answer, in the math-verify process
STARTUP_S = 120  # for that process to import math-verify, on a busy machine


def answer_key(answer: str | None) -> tuple[str | None, str | None]:
    """(the integer as a normalised digit string, None), or (None, why the answer is unusable).

    Never raises for a model's answer: math-verify failing, crashing or running past TIMEOUT_S
    fails that answer only.
    """
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
    return _VERIFIER.check(s)


class _Verifier:
    """math-verify in a child process, one answer at a time. An answer past TIMEOUT_S is killed
    with the process: no signal (math-verify's SIGALRM timeout, main thread only) interrupts a
    long C-level big-integer operation, and a killed process also frees what it allocated."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def check(self, s: str) -> tuple[str | None, str | None]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._stop()
                self._start()
            proc = self.proc
            try:
                proc.stdin.write(json.dumps(s) + "\n")
                proc.stdin.flush()
                line = _readline(proc, TIMEOUT_S)
            except BrokenPipeError:  # it had just died
                line = ""
            if line:
                key, why = json.loads(line)
                return key, why
            self._stop()
            if line is None:
                return None, f"math-verify: no verdict within {TIMEOUT_S} s: {s[:50]!r}"
            return None, f"math-verify: its process died (exit {proc.returncode}): {s[:50]!r}"

    def _start(self) -> None:
        code = "from evals.scorers.aime import _serve; _serve()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],  # where `evals` imports from
        )
        if _readline(self.proc, STARTUP_S) != '"ready"\n':
            self._stop()
            raise RuntimeError(f"the math-verify process did not start within {STARTUP_S} s")

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            with contextlib.suppress(BrokenPipeError):  # bytes left unsent to a dead process
                self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None


def _readline(proc: subprocess.Popen, timeout: float) -> str | None:
    """The process's next line ('' when it ended), or None after `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


_VERIFIER = _Verifier()
atexit.register(_VERIFIER._stop)


def _serve() -> None:
    """The child: a JSON string per line in, a JSON [key, why] per line out."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _math_verify_int("1+1")  # imports and the parser's first load count for no answer

    print(json.dumps("ready"), file=out, flush=True)
    for line in sys.stdin:
        s = json.loads(line)
        try:
            reply = _math_verify_int(s)
        except Exception as e:  # math-verify or sympy failing on one answer fails that answer
            reply = None, f"math-verify: {type(e).__name__}: {str(e)[:200]}"
        print(json.dumps(reply), file=out, flush=True)


def _math_verify_int(s: str) -> tuple[str | None, str | None]:
    import sympy
    from math_verify import LatexExtractionConfig, parse

    why = "not an integer"
    # no SIGALRM timeout (main thread only, and blind to C-level loops): the parent's kill is it
    values = parse(f"${s}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    for value in values:
        if not isinstance(value, sympy.Basic):
            continue
        try:
            _digits_bound(value)
        except _Unusable as e:
            why = str(e)
            continue
        exact = value.doit()
        if not exact.is_Integer:
            why = "not an integer"
        elif abs(exact.p) >= 10**MAX_DIGITS:
            why = f"value of {MAX_DIGITS}+ digits"
        else:
            return str(exact.p), None
    return None, f"{why}: {s[:50]!r}"


class _Unusable(Exception):
    """An expression that is not evaluated: the message is the reason."""


def _pow10(x: float) -> float:
    return math.inf if x > 300 else 10.0**x


def _digits_bound(e) -> float:
    """An upper bound on the decimal digits of |x| and of 1/|x| for every part x of `e`, from its
    structure alone (nothing is evaluated, so 9^{9^{9^{9}}} costs nothing); _Unusable for a
    part that is not plain arithmetic or may pass MAX_WORK_DIGITS."""
    import sympy
    from sympy.core.function import AppliedUndef

    if e.is_Rational:
        return max(math.log10(abs(e.p) or 1), math.log10(e.q))
    if isinstance(e, (sympy.NumberSymbol, sympy.core.numbers.ImaginaryUnit)):
        return 1.0
    args = [_digits_bound(a) for a in e.args]
    if e.is_Add or e.is_Mul:
        digits = sum(args) + 1
    elif e.is_Pow:  # |base| ** |exponent|, the exponent at most 10**digits
        digits = max(args[0], 1.0) * _pow10(args[1]) + 1
    elif isinstance(e, (sympy.floor, sympy.ceiling, sympy.Abs)):
        digits = args[0] + 1
    elif isinstance(e, sympy.Function) and not isinstance(e, AppliedUndef):
        n = _pow10(max(args, default=0.0))  # factorial(n) has n*log10(n) digits, exp(n) fewer
        digits = n * math.log10(n + 1) + 1
    else:
        raise _Unusable(f"not an integer ({type(e).__name__})")
    if digits > MAX_WORK_DIGITS:
        raise _Unusable(f"a part may have over {MAX_WORK_DIGITS} digits; not evaluated")
    return digits


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
