"""Run untrusted Python (model-written code, data files' test code) in a throwaway sandbox.

Each program runs as `python -I -c PROGRAM` in its own session in a fresh temporary working
directory, reads its job from stdin and reports with `emit(obj)` (JSON, on a descriptor that
forked children do not inherit; its stdout goes to /dev/null). With bubblewrap (`bwrap`): no
network, read-only `/`, a private `/tmp`, `/proc` and `/dev`, the working directory the only
writable path, no capabilities, and its own PID namespace, so every process it starts dies with
it. Without a working bwrap (absent, or failing its self-test) scoring refuses to run model-written
code (`require`) unless the caller opted out (`--allow-unsandboxed`, config
`eval.allow_unsandboxed`); then one warning is printed and programs run as a plain subprocess in
their own session, killed as a process group when they end ("rlimits-only").
Both modes limit address space, CPU time and file size; bwrap mode also the number of processes
(the kernel exempts root from that limit). `mode()` names the mode used, for results to record.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from evals.errors import EvalInputError

BWRAP = "bwrap"
NPROC = 128  # processes and threads inside one bwrap sandbox
FSIZE = 64 << 20  # largest file a program may write
_mode: str | None = None
_why: str | None = None  # why bwrap cannot be used, when it cannot
_allowed = False  # the user opted out of the sandbox (allow_unsandboxed)
_warned = False
_mode_lock = threading.Lock()

PRELUDE = """\
import json as _json, os as _os, resource as _resource
for _lim, _val in {limits}:
    _resource.setrlimit(_lim, (_val, _val) if _lim != _resource.RLIMIT_CPU else (_val, _val + 1))
_RESULT_FD = _os.dup(1)
_os.dup2(_os.open(_os.devnull, _os.O_WRONLY), 1)
_os.register_at_fork(after_in_child=lambda: _os.close(_RESULT_FD))


def emit(obj):
    data = _json.dumps(obj).encode()
    while data:
        data = data[_os.write(_RESULT_FD, data):]


del _lim, _val
"""


@dataclass
class Outcome:
    """status: "ok" (the program emitted a result), "timeout", "killed" (by a signal),
    "crashed" (nonzero exit) or "no result"; `result` is what it emitted, `detail` why not."""

    status: str
    result: Any = None
    detail: str = ""


def workers() -> int:
    """Sandboxes run at once: EVALPLUS_WORKERS, else the number of CPUs."""
    return max(1, int(os.environ.get("EVALPLUS_WORKERS", os.cpu_count() or 1)))


def _env(workdir: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    env.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    env.update({k: v for k, v in os.environ.items() if k.startswith("EVALPLUS_")})
    return env


def _python_dirs() -> list[str]:
    """Where this Python and its packages live, when that is under /tmp (hidden by the tmpfs)."""
    tmp = os.path.realpath("/tmp")
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    dirs.add(os.path.dirname(os.path.realpath(sys.executable)))
    dirs |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    return sorted(d for d in dirs if d == tmp or d.startswith(tmp + os.sep))


def _bwrap_argv(workdir: str, env: dict) -> list[str]:
    argv = [BWRAP, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(256 << 20), "--tmpfs", "/tmp"]
    for path in _python_dirs():  # a virtual environment under /tmp stays visible (read-only)
        argv += ["--ro-bind", path, path]
    argv += ["--bind", workdir, workdir]
    argv += ["--chdir", workdir, "--clearenv"]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    return argv + ["--"]


def _self_test() -> str | None:
    """None when bwrap runs Python here, else why not."""
    if not shutil.which(BWRAP):
        return "not found"
    with tempfile.TemporaryDirectory(prefix="mergeeval-sbx-") as wd:
        argv = _bwrap_argv(wd, _env(wd)) + [sys.executable, "-I", "-c", "print('ok')"]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"failed its self-test: {e}"
    if r.returncode == 0 and r.stdout.strip() == "ok":
        return None
    return f"failed its self-test: {r.stderr.strip()[-300:]}"


def mode() -> str:
    """ "bwrap" when bubblewrap runs here, else "rlimits-only"."""
    global _mode, _why
    with _mode_lock:
        if _mode is None:
            _why = _self_test()
            _mode = "bwrap" if _why is None else "rlimits-only"
        return _mode


def allow_unsandboxed(allowed: bool = True) -> None:
    """The user's explicit opt-out: without bubblewrap, run programs with resource limits only."""
    global _allowed, _warned
    _allowed, _warned = allowed, False


def require() -> str:
    """The mode programs will run in; without a working sandbox an error that says how to install
    one, unless the user opted out (`allow_unsandboxed`; then one warning)."""
    global _warned
    if mode() == "bwrap":
        return _mode
    if not _allowed:
        raise EvalInputError(
            f"bubblewrap ({BWRAP}) {_why}: model-written code runs only inside the bubblewrap "
            "sandbox. Fix: install bubblewrap (apt-get install bubblewrap, or run scripts/setup.sh "
            "as root, which installs it), or opt out with --allow-unsandboxed (run config: "
            "eval.allow_unsandboxed: true) to run it with resource limits only"
        )
    with _mode_lock:
        if not _warned:
            _warned = True
            print(
                f"mergeeval: WARNING: bubblewrap ({BWRAP}) {_why}; model-written code runs with "
                "resource limits only, without filesystem, network or process isolation "
                "(--allow-unsandboxed). Fix: install bubblewrap (e.g. apt-get install bubblewrap).",
                file=sys.stderr,
            )
    return _mode


def run_python(program: str, stdin: bytes, timeout: float, memory: int | None = 6 << 30) -> Outcome:
    """Run `program` (Python source; `emit(obj)` reports its result) on `stdin` in a sandbox,
    with `timeout` wall seconds (and as many CPU seconds) and `memory` bytes of address space."""
    limits = ["(_resource.RLIMIT_CORE, 0)", f"(_resource.RLIMIT_FSIZE, {FSIZE})"]
    limits.append(f"(_resource.RLIMIT_CPU, {math.ceil(timeout) + 1})")
    if memory is not None:
        limits.append(f"(_resource.RLIMIT_AS, {memory})")
    sandboxed = require() == "bwrap"
    if sandboxed:
        limits.append(f"(_resource.RLIMIT_NPROC, {NPROC})")
    source = PRELUDE.format(limits="[" + ", ".join(limits) + "]") + program
    with tempfile.TemporaryDirectory(prefix="mergeeval-sbx-", ignore_cleanup_errors=True) as wd:
        env = _env(wd)
        argv = [sys.executable, "-I", "-c", source]
        if sandboxed:
            argv = _bwrap_argv(wd, env) + argv
        with tempfile.TemporaryFile() as err:  # a file: processes left behind cannot hold it open
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=wd,
                env=env,
                start_new_session=True,
            )
            try:
                out, _ = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.communicate()
                return Outcome("timeout", detail=f"ran past {timeout:g} s")
            finally:
                _killpg(proc.pid)
            err.seek(max(0, err.seek(0, os.SEEK_END) - 2000))
            tail = err.read().decode(errors="replace")
    sig = -proc.returncode if proc.returncode < 0 else 0
    if sandboxed and proc.returncode > 128:  # bwrap exits 128 + the signal that ended the program
        sig = proc.returncode - 128
    if sig:
        return Outcome("killed", detail=f"{_signame(sig)}; {tail}")
    if proc.returncode != 0:
        return Outcome("crashed", detail=f"exit status {proc.returncode}; {tail}")
    try:
        return Outcome("ok", json.loads(out))
    except ValueError:
        return Outcome("no result", detail=tail)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
