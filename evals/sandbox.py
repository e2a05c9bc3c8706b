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
Both modes limit address space, CPU time and file size. The number of processes and threads is
capped per sandbox (`process_cap()` names how, for results to record): by a pids cgroup of its own
(`pids.max`, cgroup v2 or v1) where this process may create one under its own cgroup, which holds
for every user, root included; else, in bwrap mode and not as root, by RLIMIT_NPROC (counted per
sandbox, as bwrap gives each its own user namespace unless it is installed setuid). The kernel
does not apply RLIMIT_NPROC to root (uid 0), so as root without a pids cgroup scoring refuses to
run model-written code unless the user opted out (`allow_unsandboxed`; then one warning, and no
process cap). A program's cgroup is emptied (what still runs there killed) and removed when the
program ends. `mode()` names the mode.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from evals.errors import EvalInputError

BWRAP = "bwrap"
NPROC = 128  # processes and threads in one sandbox (its pids.max, or its RLIMIT_NPROC)
FSIZE = 64 << 20  # largest file a program may write
_mode: str | None = None
_why: str | None = None  # why bwrap cannot be used, when it cannot
_allowed = False  # the user opted out of the sandbox (allow_unsandboxed)
_warned = False
_mode_lock = threading.Lock()
_cgroup: tuple[str, int] | None = None  # (the directory sandbox cgroups go in, cgroup version)
_cgroup_why: str | None = None  # why no pids cgroup can be used, when none can
_cgroup_checked = False
_cgroup_seq = itertools.count()
_cgroup_lock = threading.Lock()
# sh -c _JOIN PROCS ARGV...: join the cgroup whose cgroup.procs is PROCS, then exec ARGV
_JOIN = 'echo $$ > "$0" && exec "$@"'

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


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """The real path of `path`, resolved as the kernel does; every symbolic link met on the way
    is added to `links` (where it is, with its parent resolved -> its target as written)."""
    cur = "/" if path.startswith("/") else os.getcwd()
    if depth > 40:  # a loop: the kernel gives up too (ELOOP)
        return os.path.realpath(path)
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            links[nxt] = os.readlink(nxt)
            cur = _resolve(os.path.join(cur, links[nxt]), links, depth + 1)
        else:
            cur = nxt
    return cur


def _python_paths() -> tuple[list[str], dict[str, str]]:
    """What this Python reads that lies under /tmp (hidden in the sandbox by its tmpfs): the real
    directories of the interpreter, its prefixes and sys.path (bound read-only), and the symbolic
    links met on the way to them (recreated, as links, where a bound directory does not hold them):
    a virtual environment under /tmp, or one that is (or is reached through) a link, e.g. a `.venv`
    link to a venv elsewhere, or a link under /tmp to this venv."""
    tmp = os.path.realpath("/tmp")

    def under(path: str, top: str) -> bool:
        return path == top or path.startswith(top + os.sep)

    links: dict[str, str] = {}
    dirs = {os.path.dirname(_resolve(sys.executable, links))}
    prefixes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    dirs |= {_resolve(p, links) for p in (*prefixes, *sys.path) if p and os.path.isdir(p)}
    binds = sorted(d for d in dirs if under(d, tmp))
    made = {
        link: target
        for link, target in links.items()
        if under(link, tmp) and not any(under(link, b) for b in binds)
    }
    return binds, made


def _bwrap_argv(workdir: str, env: dict) -> list[str]:
    argv = [BWRAP, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(256 << 20), "--tmpfs", "/tmp"]
    binds, links = _python_paths()
    for path in binds:  # a virtual environment under /tmp stays visible (read-only)
        argv += ["--ro-bind", path, path]
    for link in sorted(links):  # and a link to it, or to this Python, that lies under /tmp
        argv += ["--symlink", links[link], link]
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


def _unescape(field: str) -> str:
    """A /proc/self/mountinfo field (spaces and the like written as octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _own_cgroups(proc: str = "/proc/self") -> tuple[list[tuple[str, int]], list[str]]:
    """This process's cgroup directories in the hierarchies that have the pids controller, v2
    before v1 (as [(directory, version)]), and why each other one that was seen cannot serve."""
    own: dict[int, str] = {}
    with open(os.path.join(proc, "cgroup")) as f:
        for line in f:
            hier, controllers, path = line.rstrip("\n").split(":", 2)
            if hier == "0" and not controllers:
                own[2] = path
            elif "pids" in controllers.split(","):
                own[1] = path
    found, why = [], []
    with open(os.path.join(proc, "mountinfo")) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, fs = left.split(), right.split()
            version = {"cgroup2": 2, "cgroup": 1}.get(fs[0] if fs else "")
            if version not in own or (version == 1 and "pids" not in fs[-1].split(",")):
                continue
            root, point = _unescape(fields[3]), _unescape(fields[4])
            rel = os.path.relpath(own[version], root)
            if rel == ".." or rel.startswith("../"):
                continue  # a mount of another part of the hierarchy
            where = os.path.normpath(os.path.join(point, rel))
            if version == 2:
                try:
                    with open(os.path.join(where, "cgroup.controllers")) as c:
                        available = c.read().split()
                except OSError as e:
                    why.append(f"cgroup v2 {where}: {e.strerror or e}")
                    continue
                if "pids" not in available:
                    why.append(f"cgroup v2 {where} has no pids controller")
                    continue
            if (where, version) not in found:
                found.append((where, version))
    if not own:
        why.append("this process is in no cgroup hierarchy (/proc/self/cgroup)")
    elif not found and not why:
        why.append("no cgroup hierarchy with the pids controller is mounted here")
    return sorted(found, key=lambda x: -x[1]), why


def _make_cgroup(parent: str) -> str:
    """A new cgroup for one sandbox under `parent`, with pids.max = NPROC."""
    path = os.path.join(parent, f"mergeeval-{os.getpid()}-{next(_cgroup_seq)}")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(NPROC))
    except OSError:
        os.rmdir(path)
        raise
    return path


def _kill_cgroup(path: str) -> None:
    kill = os.path.join(path, "cgroup.kill")  # cgroup v2, Linux 5.14+
    try:
        if os.path.exists(kill):
            with open(kill, "w") as f:
                f.write("1")
            return
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        return
    for pid in pids:  # cgroup v1: one by one, again until it is empty (its pids.max bounds forks)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _remove_cgroup(path: str, wait: float = 10) -> None:
    """Kill whatever still runs in the cgroup at `path`, then remove it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                print(f"mergeeval: WARNING: could not remove the sandbox cgroup {path}: {e}",
                      file=sys.stderr)  # fmt: skip
                return
        _kill_cgroup(path)
        time.sleep(0.01)


def _probe_cgroup(parent: str, version: int) -> None:
    """Make a cgroup for sandboxes under `parent` and run a process in it, or raise OSError."""
    if version == 2:
        control = os.path.join(parent, "cgroup.subtree_control")
        with open(control) as f:
            enabled = f.read().split()
        if "pids" not in enabled:  # pids is a threaded controller: allowed beside our process
            with open(control, "w") as f:
                f.write("+pids")
    for name in os.listdir(parent):  # empty ones a killed run of ours left behind
        m = re.fullmatch(r"mergeeval-(\d+)-\d+", name)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                try:
                    os.rmdir(os.path.join(parent, name))
                except OSError:
                    pass
            except OSError:
                pass
    path = _make_cgroup(parent)
    try:
        argv = [
            "/bin/sh",
            "-c",
            _JOIN,
            os.path.join(path, "cgroup.procs"),
            "cat",
            "/proc/self/cgroup",
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if os.path.basename(path) not in r.stdout:
            raise OSError(f"a process could not join {path}: {r.stderr.strip()[-300:]}")
    finally:
        _remove_cgroup(path)


def _pids_cgroup() -> tuple[str, int] | None:
    """(the directory each sandbox's pids cgroup is made in, its cgroup version), or None (then
    `_cgroup_why` says why): found and tried once per process."""
    global _cgroup, _cgroup_why, _cgroup_checked
    with _cgroup_lock:
        if not _cgroup_checked:
            _cgroup, why = None, []
            try:
                found, why = _own_cgroups()
            except (OSError, ValueError, IndexError) as e:
                found, why = [], [f"cannot read this process's cgroups: {e}"]
            for parent, version in found:
                try:
                    _probe_cgroup(parent, version)
                except (OSError, subprocess.SubprocessError) as e:
                    why.append(f"cgroup v{version} {parent}: {e}")
                    continue
                _cgroup = (parent, version)
                break
            _cgroup_why = (
                None if _cgroup else "no pids cgroup can be made here (" + "; ".join(why) + ")"
            )
            _cgroup_checked = True
        return _cgroup


def _uncapped() -> str | None:
    """Why programs in bwrap mode would run without a process cap, or None when they have one."""
    if _pids_cgroup() is not None or os.getuid() != 0:
        return None
    return f"as root the kernel does not enforce RLIMIT_NPROC, and {_cgroup_why}"


def process_cap() -> str:
    """How the processes (and threads) of one sandbox are capped, for results to record:
    "pids.max=128 (cgroup v2)" (or v1), "RLIMIT_NPROC=128" (bwrap, not root) or "none: WHY"."""
    cgroup = _pids_cgroup()
    if cgroup is not None:
        return f"pids.max={NPROC} (cgroup v{cgroup[1]})"
    if mode() != "bwrap":
        return f"none: rlimits-only sets no process limit, and {_cgroup_why}"
    return f"none: {_uncapped()}" if os.getuid() == 0 else f"RLIMIT_NPROC={NPROC}"


def allow_unsandboxed(allowed: bool = True) -> None:
    """The user's explicit opt-out: without bubblewrap, run programs with resource limits only."""
    global _allowed, _warned
    _allowed, _warned = allowed, False


def require() -> str:
    """The mode programs will run in; without a working sandbox, or (as root) without a way to
    cap its processes, an error that says how to fix it, unless the user opted out
    (`allow_unsandboxed`; then one warning)."""
    global _warned
    sandboxed = mode() == "bwrap"
    uncapped = _uncapped() if sandboxed else None
    if sandboxed and uncapped is None:
        return _mode
    if not _allowed and not sandboxed:
        raise EvalInputError(
            f"bubblewrap ({BWRAP}) {_why}: model-written code runs only inside the bubblewrap "
            "sandbox. Fix: install bubblewrap (apt-get install bubblewrap, or run scripts/setup.sh "
            "as root, which installs it), or opt out with --allow-unsandboxed (run config: "
            "eval.allow_unsandboxed: true) to run it with resource limits only"
        )
    if not _allowed:
        raise EvalInputError(
            f"the sandbox cannot cap its processes: {uncapped}. Model-written code runs only with "
            f"a process cap (a fork bomb in one candidate would starve the others). Fix: score as "
            "a non-root user (bubblewrap then applies RLIMIT_NPROC in each sandbox), or where "
            "this process may make cgroups under its own (cgroup v2 with the pids controller, or "
            "v1's pids hierarchy, writable: a VM, or a container with a writable /sys/fs/cgroup), "
            "or opt out with --allow-unsandboxed (run config: eval.allow_unsandboxed: true) to run "
            "it in the sandbox without a process cap"
        )
    with _mode_lock:
        if not _warned:
            _warned = True
            if sandboxed:
                message = (
                    f"{uncapped}; model-written code runs in the bubblewrap sandbox without a "
                    "process cap (--allow-unsandboxed). Fix: score as a non-root user, or where "
                    "this process may make pids cgroups."
                )
            else:
                message = (
                    f"bubblewrap ({BWRAP}) {_why}; model-written code runs with resource limits "
                    "only, without filesystem, network or process isolation "
                    "(--allow-unsandboxed). Fix: install bubblewrap (e.g. apt-get install "
                    "bubblewrap)."
                )
            print(f"mergeeval: WARNING: {message}", file=sys.stderr)
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
    cgroup = _pids_cgroup()
    with tempfile.TemporaryDirectory(prefix="mergeeval-sbx-", ignore_cleanup_errors=True) as wd:
        env = _env(wd)
        argv = [sys.executable, "-I", "-c", source]
        if sandboxed:
            argv = _bwrap_argv(wd, env) + argv
        cg = None
        if cgroup is not None:  # the program starts in its own pids cgroup, capped from the start
            try:
                cg = _make_cgroup(cgroup[0])
            except OSError as e:
                raise OSError(
                    f"could not make the sandbox's pids cgroup under {cgroup[0]}: {e}"
                ) from e
            argv = ["/bin/sh", "-c", _JOIN, os.path.join(cg, "cgroup.procs"), *argv]
        try:
            with tempfile.TemporaryFile() as err:  # a file: processes left cannot hold it open
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
                    if cg is not None:
                        _kill_cgroup(cg)
                    proc.communicate()
                    return Outcome("timeout", detail=f"ran past {timeout:g} s")
                finally:
                    _killpg(proc.pid)
                err.seek(max(0, err.seek(0, os.SEEK_END) - 2000))
                tail = err.read().decode(errors="replace")
        finally:
            if cg is not None:
                _remove_cgroup(cg)
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
