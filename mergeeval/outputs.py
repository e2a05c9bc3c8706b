"""Outputs that never touch an input and appear whole or not at all.

`guard_output` refuses an output that is, contains or lies inside an input, has the wrong kind
(a file where a folder is written, or the reverse), or exists without `--force`; `--force` only
replaces a folder this project wrote (one holding an `owned_by` file).

`atomic_dir` / `atomic_file` write under a hidden sibling `.NAME.partial-ID` and rename it into
place when complete. The writer holds an flock on `.NAME.partial-ID.lock` while it works, so a
partial whose writer is gone (SIGKILL, power loss, node failure) is recognised, and the next
writer of the same output removes it. An exception, Ctrl-C or SIGTERM (see `mergeeval.cli`)
removes the partial at once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mergeeval.errors import InputError

LOCK_SUFFIX = ".lock"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def guard_output(
    output: Path,
    inputs: Iterable[tuple[str, Path | None]],
    *,
    force: bool = False,
    kind: str = "folder",
    owned_by: tuple[str, ...] = (),
    flag: str = "--output",
) -> Path:
    """Check `output` against the inputs (label, path) before anything is read or written."""
    output = Path(output)
    out = _real(output)
    for label, path in inputs:
        if path is None:
            continue
        src = _real(path)
        if out == src:
            raise InputError(
                f"{flag} {output} is the {label} ({path}); write to a new path, inputs are never replaced"
            )
        if out in src.parents:
            raise InputError(
                f"{flag} {output} contains the {label} ({path}); choose an output outside the inputs"
            )
        if src in out.parents:
            raise InputError(
                f"{flag} {output} lies inside the {label} ({path}); choose an output outside the inputs"
            )
    if output.is_symlink() or output.exists():
        if kind == "folder" and not output.is_dir():
            raise InputError(f"{flag} {output} exists and is not a folder; choose a folder path")
        if kind == "file" and output.is_dir():
            raise InputError(f"{flag} {output} is a folder; give a file path")
        if kind == "folder":
            if not force:
                raise InputError(f"{flag} {output} exists; remove it or pass --force")
            if owned_by and not any((output / f).is_file() for f in owned_by):
                raise InputError(
                    f"--force refuses to replace {output}: it holds no {' or '.join(owned_by)}, "
                    "so this project did not write it; remove it yourself or choose another output"
                )
    return output


def _lock(path: Path) -> int:
    """Create `path` and hold an exclusive flock on it; return the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def sweep_stale(target: Path) -> list[Path]:
    """Remove partials of `target` whose writer is gone; return what was removed."""
    target = Path(target)
    prefix = f".{target.name}.partial-"
    try:
        entries = [e for e in os.listdir(target.parent) if e.startswith(prefix)]
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    locks = {e[: -len(LOCK_SUFFIX)] for e in entries if e.endswith(LOCK_SUFFIX)}
    for stem in sorted(locks):
        lock = target.parent / (stem + LOCK_SUFFIX)
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue  # its writer is alive
            raise
        try:
            for e in entries:
                if e != stem + LOCK_SUFFIX and (e == stem or e.startswith(stem + ".")):
                    _remove(target.parent / e)
                    removed.append(target.parent / e)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for e in entries:  # partials without a lock file: an earlier version's leftovers
        if not e.endswith(LOCK_SUFFIX) and not any(e == s or e.startswith(s + ".") for s in locks):
            _remove(target.parent / e)
            removed.append(target.parent / e)
    return removed


@contextmanager
def _partial(target: Path) -> Iterator[tuple[Path, Path]]:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    stem = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    lock = Path(str(stem) + LOCK_SUFFIX)
    fd = _lock(lock)
    try:
        yield stem, Path(str(stem) + ".old")
    except BaseException:
        _remove(stem)
        raise
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty hidden folder; on success it replaces `target` (guard it first)."""
    target = Path(target)
    with _partial(target) as (tmp, old):
        tmp.mkdir()
        yield tmp
        if target.exists():  # replace only once the new folder is complete
            target.rename(old)
            tmp.rename(target)
            _remove(old)
        else:
            tmp.rename(target)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a hidden path to write; on success it replaces `target` in one rename."""
    target = Path(target)
    with _partial(target) as (tmp, _):
        yield tmp
        os.replace(tmp, target)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
