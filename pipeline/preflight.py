"""Before any job runs: the run's pending downloads can succeed and fit on the disk.

For every hub model whose folder is not there yet, the hub is asked (at the locked commit) for the
files a download fetches and their sizes; a repo, commit or weights file that is not there is one
error naming the config key. The bytes to download plus the run's merged models (each the size of
the base's weights) must fit in the free space of the disks they go to; the message gives both
numbers. Offline (HF_HUB_OFFLINE) nothing is asked: the downloads could not run either.

Before that, and before the revision lock is written, the run's output folders (`results/RUN`,
`logs/RUN`) must be writable: an existing one and its subfolders, or the nearest existing folder
above a missing one, by this user (`os.access`) and in fact (a probe file, which a read-only mount
refuses to root as well); else one error naming the folder instead of a job's traceback.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mergeeval.errors import InputError
from mergeeval.hub import endpoint, hub_errors, offline
from merges.hub import MODEL_FILES

GB = 1e9


@dataclass(frozen=True)
class Download:
    key: str
    repo: str
    commit: str
    dest: Path


def model_files(repo: str, commit: str, key: str) -> dict[str, int]:
    """{file: bytes} of what `merges download` fetches from `repo` at `commit`."""
    from huggingface_hub import HfApi

    try:
        with hub_errors(repo, commit):
            tree = list(HfApi().list_repo_tree(repo, revision=commit, recursive=True))
    except InputError as e:
        raise InputError(f"{key}: {e}") from None
    except Exception as e:  # the network, the server: said once, with the input it was for
        raise InputError(f"{key}: could not ask {endpoint()} for {repo}@{commit} "
                         f"({type(e).__name__}: {e}); retry, or check the commit") from None  # fmt: skip
    files = {
        f.path: getattr(f, "size", 0) or 0
        for f in tree
        if hasattr(f, "size") and any(fnmatch.fnmatch(f.path, p) for p in MODEL_FILES)
    }
    if not any(f.endswith(".safetensors") for f in files):
        raise InputError(f"{key}: {repo}@{commit} has no safetensors weights; give a revision "
                         "with them (a PyTorch .bin checkpoint is not read)")  # fmt: skip
    return files


def free_bytes(path: Path) -> tuple[int, Path, int]:
    """(free bytes, the existing folder they were measured at, its device) for a path to be."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free, p, os.stat(p).st_dev


def check_disk(needs: list[tuple[str, Path, int]]) -> None:
    """`needs`: (what, where, bytes). Needs on one device are added up; one error per device."""
    by_device: dict[int, list] = {}
    for what, where, n in needs:
        free, at, dev = free_bytes(where)
        by_device.setdefault(dev, [free, at, []])[2].append((what, n))
    for free, at, parts in by_device.values():
        need = sum(n for _, n in parts)
        if need > free:
            detail = " + ".join(f"{n / GB:.2f} GB {what}" for what, n in parts)
            raise InputError(
                f"not enough disk at {at}: the run needs {need / GB:.2f} GB ({detail}) and "
                f"{free / GB:.2f} GB are free; free space or run from a larger disk"
            )


def preflight(downloads: list[Download], base_dir: Path, n_merges: int, results: Path) -> dict:
    """Check the pending downloads and the disk for them and for `n_merges` merged models (each
    the size of the base's weights); return the figures checked."""
    if offline() or not (downloads or n_merges):
        return {}
    sizes = {d.dest: sum(model_files(d.repo, d.commit, d.key).values()) for d in downloads}
    base = sizes.get(base_dir)
    if base is None:  # the base is already here
        base = sum(f.stat().st_size for f in base_dir.glob("*.safetensors"))
    needs = []
    if downloads:
        needs.append(
            (f"to download ({len(downloads)} models)", downloads[0].dest, sum(sizes.values()))
        )
    if n_merges:
        needs.append((f"of merged models ({n_merges} x the base)", results, n_merges * base))
    check_disk(needs)
    return {"download_bytes": sum(sizes.values()), "merged_bytes": n_merges * base}


def check_writable(folder: Path, what: str = "the run's outputs") -> None:
    """`folder` can be written (made if missing): one InputError naming it otherwise. Nothing is
    created; a probe file in the folder that would hold it is made and removed at once."""
    folder = Path(folder)
    at = folder.absolute()
    while not os.path.lexists(at):
        at = at.parent
    here = Path.cwd()

    def shown(p: Path) -> Path:
        return p.relative_to(here) if p.is_relative_to(here) else p

    def refuse(where: Path, why: str, fix: str) -> InputError:
        return InputError(f"cannot write {what} to {folder}: {shown(where)} {why}; {fix}")

    fix = "give this user write access to it or run from a folder you can write"
    if not at.is_dir():
        kind = "is a broken link" if not at.exists() else "is not a folder"
        raise refuse(at, kind, "remove it or give another run name")
    for d in [at, *(_subfolders(at) if at == folder.absolute() else [])]:
        if not os.access(d, os.W_OK | os.X_OK):
            raise refuse(d, f"is not writable by this user (uid {os.getuid()})", fix)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=at)
    except OSError as e:
        raise refuse(at, f"refuses a new file ({e.strerror})", fix) from None
    os.close(fd)
    os.unlink(probe)


def _subfolders(folder: Path) -> list[Path]:
    """The folders in `folder` (the run's models, stats, samples, ...); none if it cannot be read."""
    try:
        return [c for c in folder.iterdir() if c.is_dir()]
    except OSError:
        return []
