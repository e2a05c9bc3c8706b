"""Sample files: JSONL (optionally gzip), one line per item: {"id": ..., "completions": [...], ...}.

`generate` also stores the rendered prompt, finish reasons and token counts per item, and writes a
sidecar `<name>.meta.json` (settings, model identity, template) after the samples are complete.
Both are written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from evals.errors import EvalInputError
from mergeeval import records
from mergeeval.outputs import atomic_file


def write_samples(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    with atomic_file(path) as tmp:
        if path.suffix == ".gz":
            with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: same samples, same bytes
                f.write(data)
        else:
            tmp.write_bytes(data)


def read_jsonl(path: Path, what: str = "data file") -> list[dict]:
    """Rows of a JSONL file (gzip when it ends in .gz); a missing, empty or malformed file is an error."""
    return records.read_jsonl(path, what, EvalInputError)


def read_samples(path: Path) -> list[dict]:
    """Sample rows, each checked for an id and a non-empty list of string completions."""
    rows = read_jsonl(path, "samples file")
    for i, row in enumerate(rows, 1):
        if (
            not isinstance(row, dict)
            or "id" not in row
            or not isinstance(row.get("completions"), list)
        ):
            raise EvalInputError(
                f'{path}: item {i}: expected {{"id": ..., "completions": ["...", ...]}}'
            )
        if not row["completions"] or not all(isinstance(c, str) for c in row["completions"]):
            raise EvalInputError(
                f"{path}: item {i}: 'completions' must be a non-empty list of strings"
            )
    return rows


def read_meta(path: Path) -> dict:
    """A samples file's `.meta.json` ({} when absent); a malformed one is an EvalInputError."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        meta = e
    if not isinstance(meta, dict):
        raise EvalInputError(
            f"{path} is not a JSON object ({meta}); regenerate the samples, or delete it and pass "
            "--data/--source"
        )
    return meta


def meta_path(samples_path: Path) -> Path:
    name = Path(samples_path).name
    for suffix in (".jsonl.gz", ".jsonl"):
        name = name.removesuffix(suffix)
    return Path(samples_path).with_name(name + ".meta.json")
