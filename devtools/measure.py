"""Run a command and measure it as users feel it: wall time, peak anonymous memory, bytes moved.

Peak memory is the largest sum, over the process and its descendants, of `RssAnon` in
`/proc/PID/status`, sampled every few milliseconds: what the merge itself holds. (`ru_maxrss`
also counts file-backed pages of memory-mapped safetensors, which are page cache.) Bytes read and
written are the process's `rchar`/`wchar` in `/proc/PID/io`, read once it has exited but before it
is reaped, so nothing is missed (children it spawned and reaped are added by the kernel).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Measured:
    returncode: int
    wall_s: float
    peak_anon_bytes: int
    read_bytes: int
    written_bytes: int
    output_tail: str


def _children(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _io(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(": ") for line in f)}
    except OSError:  # some kernels hide it
        return {"rchar": -1, "wchar": -1}


def run_measured(cmd: list[str], env: dict | None = None, interval_s: float = 0.005) -> Measured:
    """Run `cmd` to completion; return its exit code, wall time, peak RssAnon and I/O bytes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            total = sum(_rss_anon(p) for p in (proc.pid, *_children(proc.pid)))
            peak = max(peak, total)
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tail: list[str] = []
    reader = threading.Thread(
        target=lambda: tail.extend(proc.stdout.readlines()[-40:]), daemon=True
    )
    reader.start()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    wall = time.perf_counter() - t0
    done.set()
    io = _io(proc.pid)
    proc.wait()
    sampler.join()
    reader.join()
    return Measured(proc.returncode, wall, peak, io["rchar"], io["wchar"], "".join(tail))
