"""Hugging Face downloads at pinned revisions: model folders and calibration prompts.

Only the files a merge and an evaluation need are fetched (safetensors, configs, tokenizer and chat
template). Each folder gets `source.json` ({repo_id, revision, commit}) that merge.json and the
evaluation meta record. A token, if any, is read by huggingface_hub from the environment and is
never written to logs or files.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

from mergeeval.outputs import atomic_dir, write_text_atomic
from mergeeval.records import SOURCE_JSON
from merges.errors import MergeInputError

MODEL_FILES = ["*.safetensors", "*.json", "*.jinja", "tokenizer*", "*.model", "*.txt"]


def slug(repo_id: str) -> str:
    """A hub id as one path component: allenai/Olmo-3-1025-7B -> allenai--Olmo-3-1025-7B."""
    return repo_id.replace("/", "--")


def download_model(repo_id: str, revision: str, output: Path) -> dict:
    """snapshot_download of the needed files into `output` (atomically); return source.json."""
    from huggingface_hub import HfApi, snapshot_download

    output = Path(output)
    if output.exists():
        raise MergeInputError(f"{output} exists; remove it to download again")
    with atomic_dir(output) as tmp:
        snapshot_download(repo_id, revision=revision, local_dir=tmp, allow_patterns=MODEL_FILES)
        commit = HfApi().model_info(repo_id, revision=revision).sha
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        source = {"repo_id": repo_id, "revision": revision, "commit": commit}
        (tmp / SOURCE_JSON).write_text(json.dumps(source, indent=2) + "\n")
        if not any(tmp.glob("*.safetensors")):
            raise MergeInputError(f"{repo_id}@{revision} has no safetensors weights")
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
    (rows 0..n-1). The selection is written, after the JSONL, to `FILE.meta.json` (with the
    JSONL's sha256, so a stale or edited file is recognised); `merges stats` records it."""
    import datasets

    if select not in SELECTIONS:
        raise MergeInputError(f"unknown selection {select!r}; valid: {', '.join(SELECTIONS)}")
    if column not in PROMPT_COLUMNS:
        raise MergeInputError(f"unknown column {column!r}; valid: {', '.join(PROMPT_COLUMNS)}")
    ds = datasets.load_dataset(dataset, revision=revision, split=split)
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
        rows.append(
            {field: value, "source": {"dataset": dataset, "revision": revision, "index": i}}
        )
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text_atomic(Path(output), text)
    meta = {
        "dataset": dataset,
        "revision": revision,
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
