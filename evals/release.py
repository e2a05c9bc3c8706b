"""A benchmark data file fetched from where the user says (a local path or a mirror URL) instead of
its home (EvalPlus's HumanEval+ release on GitHub): copied, sha256 checked when the config gives
one, and recorded in a sidecar `FILE.meta.json` ({source, sha256, bytes}).

    python -m evals fetch-data --source PATH_OR_URL [--sha256 HEX] --output FILE
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

from evals.errors import EvalInputError
from mergeeval.hub import with_retries
from mergeeval.outputs import atomic_file, write_text_atomic

CHUNK = 1 << 20


def _open(source: str):
    if source.startswith(("http://", "https://")):
        return with_retries(
            lambda: urllib.request.urlopen(source, timeout=60), f"fetching {source}"
        )
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise EvalInputError(f"data source {source} is not a file; give a path or an http(s) URL")
    return path.open("rb")


def fetch(source: str, output: Path, sha256: str | None = None) -> dict:
    """Copy `source` to `output` (appearing only when complete and checked); return the record."""
    digest, size = hashlib.sha256(), 0
    output = Path(output)
    try:
        src = _open(source)
    except OSError as e:
        raise EvalInputError(f"data source {source}: {e}; check the path or URL") from None
    with src, atomic_file(output) as tmp, open(tmp, "wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        if sha256 and digest.hexdigest() != sha256.lower():
            raise EvalInputError(
                f"data source {source}: sha256 {digest.hexdigest()} is not the configured "
                f"{sha256}; fetch the right release or correct the sha256"
            )
    record = {"source": source, "sha256": digest.hexdigest(), "bytes": size}
    write_text_atomic(Path(f"{output}.meta.json"), json.dumps(record, indent=1) + "\n")
    return record
