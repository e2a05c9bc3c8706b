"""Sample files: JSONL (optionally gzip), one line per item: {"id": ..., "completions": [...], ...}.

`generate` also stores the rendered prompt, finish reasons and token counts per item, and writes a
sidecar `<name>.meta.json` (settings, model identity, template) after the samples are complete.
Both are written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from evals.errors import EvalInputError


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_samples(path: Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if path.suffix == ".gz":
        with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: same samples, same bytes
            f.write(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def read_samples(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"samples file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if (
                    not isinstance(row, dict)
                    or "id" not in row
                    or not isinstance(row.get("completions"), list)
                ):
                    raise EvalInputError(
                        f'{path}:{i}: expected {{"id": ..., "completions": ["...", ...]}}'
                    )
                if not row["completions"] or not all(
                    isinstance(c, str) for c in row["completions"]
                ):
                    raise EvalInputError(
                        f"{path}:{i}: 'completions' must be a non-empty list of strings"
                    )
                rows.append(row)
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{path}: not a JSONL samples file ({e})") from None
    if not rows:
        raise EvalInputError(f"{path} holds no samples")
    return rows


def meta_path(samples_path: Path) -> Path:
    name = Path(samples_path).name
    for suffix in (".jsonl.gz", ".jsonl"):
        name = name.removesuffix(suffix)
    return Path(samples_path).with_name(name + ".meta.json")
