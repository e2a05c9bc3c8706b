"""The command-line `main()` of both packages: one message per error, cleanup on SIGTERM.

An `InputError` prints `error: ...` and exits 2; a failed write or read of the file system (disk
full, permission denied) prints one line and exits 1. Tracebacks appear with `--debug` or
`MERGEEVAL_DEBUG=1`. SIGTERM (what SLURM sends on timeout or scancel) raises `SystemExit(143)`,
so partial outputs are removed exactly as after Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys

from mergeeval.errors import InputError

DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand `--debug` (show tracebacks)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def key_values(items: list[str], flag: str, what: str = "KEY=VALUE") -> dict[str, str]:
    """Repeated `FLAG KEY=VALUE` options as a dict; a malformed or repeated KEY is an InputError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise InputError(f"{flag} expects {what}, got {item!r}")
        if key in out:
            raise InputError(f"{flag} {key}=... is given twice; keep one")
        out[key] = value
    return out


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def debug_wanted(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("MERGEEVAL_DEBUG", "") not in (
        "",
        "0",
    )


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv` (every subcommand gets `--debug`), call the chosen subcommand's `fn(args)`,
    and turn errors into exit codes."""
    add_debug_flag(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2"):  # one line per HTTP request of huggingface_hub
        logging.getLogger(name).setLevel(logging.WARNING)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.fn(args)
    except InputError as e:
        if debug_wanted(args):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug_wanted(args):
            raise
        where = f" ({e.filename})" if e.filename else ""
        hint = (
            "free space or choose another output; nothing partial was left"
            if e.errno in DISK_ERRORS
            else "set MERGEEVAL_DEBUG=1 for the traceback"
        )
        print(f"error: {e.strerror or e}{where}; {hint}", file=sys.stderr)
        return 1
