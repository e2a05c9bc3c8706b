"""The `error: ...` lines of the jobs that failed, summarised on the console when the DAG stops.

Every command of the project prints a user error as one line starting `error: ` (exit 2; a failed
write, exit 1), and a rule's shell sends it to the job's log file (`> {log} 2>&1`), which
Snakemake's console names but does not show. The Snakefile's `onerror:` handler calls `report`:
for each failed job of this invocation (Snakemake's scheduler's `failed` set; a job that failed
and then succeeded on a retry is not in it) it reads the job's log files and prints each log
that holds `error: ` lines with its last few of them, each once. Should that set be unavailable
(another Snakemake version), the logs under `logs/` written since the workflow started
(`onstart:` records the time) that hold such lines are summarised instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

ERROR_PREFIX = "error: "
LAST = 5  # error lines shown per log
MAX_LOGS = 20  # logs shown; the rest are counted
MAX_BYTES = 1 << 20  # of a log's end that is read (a job's log can be long: a vLLM run's)

_started = time.time()  # replaced by `started()` from the Snakefile's onstart handler


def started() -> None:
    """Record the start of the workflow's execution (the Snakefile's `onstart:`)."""
    global _started
    _started = time.time()


def error_lines(log: Path, last: int = LAST) -> list[str]:
    """The last `last` distinct lines of `log` that start with `error: ` (a repeated line counts
    once, at its last place), oldest first; [] for a missing or unreadable log."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - MAX_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in text.splitlines() if line.startswith(ERROR_PREFIX)]
    seen, unique = set(), []
    for line in reversed(lines):
        if line not in seen:
            seen.add(line)
            unique.append(line)
    return unique[:last][::-1]


def recent_logs(root: Path, since: float) -> list[Path]:
    """The files under `root` modified at or after `since` (a time.time()), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime >= since:
                out.append(path)
        except OSError:
            continue
    return sorted(out)


def failed_job_logs(workflow) -> list[Path] | None:
    """The log files of the jobs that failed in this invocation (a group job's: its jobs'), or
    None when Snakemake does not say which jobs failed."""
    failed = getattr(getattr(workflow, "scheduler", None), "failed", None)
    if failed is None:
        return None
    logs: dict[str, None] = {}
    for job in failed:
        for log in getattr(job, "log", None) or []:
            logs[str(log)] = None
    return sorted(Path(p) for p in logs)


def summary(logs: Iterable[Path], last: int = LAST, max_logs: int = MAX_LOGS) -> str:
    """The text printed for `logs`: each that holds `error: ` lines, with its last ones; "" when
    none does."""
    found = [(log, lines) for log in logs if (lines := error_lines(log, last))]
    if not found:
        return ""
    out = ["Errors reported by the failed jobs (the last lines starting 'error: ' of each log):"]
    for log, lines in found[:max_logs]:
        out.append(f"  {log}:")
        out.extend(f"    {line}" for line in lines)
    if len(found) > max_logs:
        out.append(f"  ... and {len(found) - max_logs} more logs with errors")
    return "\n".join(out)


def report(workflow=None, root: Path = Path("logs"), since: float | None = None) -> str:
    """Summarise the failed jobs' errors (the Snakefile's `onerror:`): print the summary to
    stderr and return it."""
    import sys

    try:
        logs = failed_job_logs(workflow) if workflow is not None else None
        if logs is None:
            logs = recent_logs(root, _started if since is None else since)
        text = summary(logs)
    except Exception as e:  # the summary must never hide Snakemake's own report of the failure
        text = f"(the failed jobs' errors could not be summarised: {type(e).__name__}: {e})"
    if text:
        print(text, file=sys.stderr, flush=True)
    return text
