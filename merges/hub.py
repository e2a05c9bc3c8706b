"""Hugging Face downloads at pinned revisions: model folders and calibration prompts.

Only the files a merge and an evaluation need are fetched (safetensors, configs, tokenizer and chat
template). Each folder gets `source.json` ({repo_id, revision, commit}) that merge.json and the
evaluation meta record; a prompts file's sidecar records the dataset commit it was read at. A
token, if any, is read by huggingface_hub from the environment and is never written to logs or
files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mergeeval.errors import InputError
from mergeeval.hub import hub_errors, resolve_commit, with_retries
from mergeeval.outputs import write_text_atomic
from mergeeval.records import SOURCE_JSON
from merges.errors import MergeInputError

MODEL_FILES = ["*.safetensors", "*.json", "*.jinja", "tokenizer*", "*.model", "*.txt"]
COMMIT_FILE = ".cache/commit"  # inside a staging folder: the commit its files belong to


def slug(repo_id: str) -> str:
    """A hub id as one path component: allenai/Olmo-3-1025-7B -> allenai--Olmo-3-1025-7B."""
    return repo_id.replace("/", "--")


def staging_dir(output: Path) -> Path:
    """Where a download into `output` gathers its files: a hidden sibling kept across reruns."""
    return output.parent / f".{output.name}.download"


@contextmanager
def _staging(output: Path, commit: str) -> Iterator[Path]:
    """The staging folder of `output`, held by this process (flock), holding only `commit`'s
    files; removed on a bad input, kept (for the rerun to resume) on any other failure."""
    staging = staging_dir(output)
    lock = Path(f"{staging}.lock")
    staging.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MergeInputError(f"another download into {output} is running") from None
        if output.exists():  # a download that finished while this one waited to start
            raise MergeInputError(f"{output} exists; remove it to download again")
        marker = staging / COMMIT_FILE
        if staging.exists() and (not marker.is_file() or marker.read_text() != commit):
            shutil.rmtree(staging)  # another commit's files (main moved): start afresh
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(commit)
        try:
            yield staging
        except InputError:
            shutil.rmtree(staging, ignore_errors=True)
            lock.unlink(missing_ok=True)
            raise
        except BaseException:
            print(f"the finished files are kept in {staging}; run the same command again to "
                  "resume", file=sys.stderr)  # fmt: skip
            raise
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def download_model(repo_id: str, revision: str, output: Path) -> dict:
    """The needed files of `repo_id` at `revision` into `output`; return source.json.

    The revision is resolved to its commit first, and the files of that commit gather in
    `staging_dir(output)`: an interrupted download (a kill, or a network error that outlasts the
    retries) leaves them there, and running it again keeps the finished files and fetches only
    the rest (a file cut off midway starts over: huggingface_hub 2.4 gives each process its own
    partial file). `output` appears, by one rename, only when complete."""
    from huggingface_hub import snapshot_download

    output = Path(output)
    if output.exists():
        raise MergeInputError(f"{output} exists; remove it to download again")
    commit = resolve_commit(repo_id, revision)
    with _staging(output, commit) as staging, hub_errors(repo_id, revision):
        with_retries(
            lambda: snapshot_download(
                repo_id, revision=commit, local_dir=staging, allow_patterns=MODEL_FILES
            ),
            f"downloading {repo_id}@{commit}",
        )
        if not any(staging.glob("*.safetensors")):
            raise MergeInputError(f"{repo_id}@{revision} has no safetensors weights")
        shutil.rmtree(staging / ".cache")
        source = {"repo_id": repo_id, "revision": revision, "commit": commit}
        (staging / SOURCE_JSON).write_text(json.dumps(source, indent=2) + "\n")
        staging.rename(output)
    return source


SELECTIONS = ("sampled", "first")
PROMPT_COLUMNS = ("auto", "messages", "prompt")
SIDECAR_SUFFIX = ".meta.json"


def prompts_sidecar(prompts: Path) -> Path:
    """`FILE.meta.json` beside a prompts file: how download-prompts selected its rows."""
    return Path(str(prompts) + SIDECAR_SUFFIX)


def download_prompts(
    dataset: str,
    revision: str,
    output: Path,
    n: int,
    split: str = "train",
    seed: int = 0,
    select: str = "sampled",
    column: str = "auto",
) -> int:
    """n prompts of a HF dataset as JSONL, in dataset order: its `messages` (else `prompt`) column,
    or the one named by `column`. `select`: `sampled` (seeded sample of row indices) or `first`
    (rows 0..n-1). The revision is resolved to its commit, which the rows are read at and the
    sidecar records. The selection is written, after the JSONL, to `FILE.meta.json` (with the
    JSONL's sha256, so a stale or edited file is recognised); `merges stats` records it."""
    import datasets

    if select not in SELECTIONS:
        raise MergeInputError(f"unknown selection {select!r}; valid: {', '.join(SELECTIONS)}")
    if column not in PROMPT_COLUMNS:
        raise MergeInputError(f"unknown column {column!r}; valid: {', '.join(PROMPT_COLUMNS)}")
    commit = resolve_commit(dataset, revision, "dataset")
    ds = datasets.load_dataset(dataset, revision=commit, split=split)
    cols = ds.column_names
    wanted = ("messages", "prompt") if column == "auto" else (column,)
    field = next((c for c in wanted if c in cols), None)
    if field is None:
        raise MergeInputError(
            f"{dataset}@{revision} has no {' or '.join(repr(c) for c in wanted)} column "
            f"(it has {cols})"
        )
    k = min(n, len(ds))
    idx = sorted(random.Random(seed).sample(range(len(ds)), k)) if select == "sampled" else range(k)
    rows = []
    for i in idx:
        value = ds[i][field]
        if field == "messages":
            value = [m for m in value if m.get("role") != "assistant"]  # prompts only
        rows.append({field: value, "source": {"dataset": dataset, "commit": commit, "index": i}})
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text_atomic(Path(output), text)
    meta = {
        "dataset": dataset,
        "revision": revision,
        "commit": commit,
        "split": split,
        "column": field,
        "select": select,
        "seed": seed if select == "sampled" else None,
        "n_requested": n,
        "n_rows": len(rows),
        "dataset_rows": len(ds),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    write_text_atomic(prompts_sidecar(Path(output)), json.dumps(meta, indent=2) + "\n")
    return len(rows)
