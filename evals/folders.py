"""A cheap check that a model or adapter folder is whole, before vLLM is given it.

A folder cut short after it was written (a full disk, a copy interrupted, a file truncated by
hand) is still an existing output to Snakemake, which serves it again; vLLM then fails deep
inside its loader with a traceback that does not name the folder. `check_served` reads only what
is small: every `*.safetensors` file's header (8-byte little-endian length + JSON), whose largest
`data_offsets` end must be exactly where the file ends, the index's `weight_map` (every file it
names exists and holds the tensors listed for it), and the JSON files vLLM and the tokenizer read.
No tensor is read. A failure is one EvalInputError naming the folder, the file, what is wrong and
the fix (delete the folder so the pipeline makes it again).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from evals.errors import EvalInputError

INDEX_NAME = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# JSON files read when a full model folder is served (config.json is required)
MODEL_JSON = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def _fix(folder: Path) -> str:
    """How the folder is made again, from the record its maker left in it."""
    if (folder / "merge.json").exists():
        return (
            "delete the folder so that the pipeline merges it again "
            "(or rerun `python -m merges run` with --force)"
        )
    try:
        source = json.loads((folder / "source.json").read_text())
    except (OSError, ValueError):
        source = None
    if isinstance(source, dict) and source.get("repo_id"):
        return (
            "delete the folder so that the pipeline downloads it again "
            "(or rerun `python -m merges download`)"
        )
    return "replace the folder with a complete copy (or delete it so the pipeline makes it again)"


def _damaged(folder: Path, kind: str, file: Path, what: str) -> EvalInputError:
    return EvalInputError(f"{kind} {folder} is damaged: {file} {what}; {_fix(folder)}")


def _json_object(folder: Path, kind: str, name: str, required: bool = True) -> dict | None:
    path = folder / name
    if not path.exists():
        if required:
            raise _damaged(folder, kind, path, "is missing")
        return None
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(folder, kind, path, f"is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise _damaged(folder, kind, path, "is not a JSON object")
    return value


def _naturals(xs) -> bool:
    return isinstance(xs, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
    )


def safetensors_names(folder: Path, kind: str, path: Path) -> set[str]:
    """The tensor names of a safetensors file whose header parses and whose size is exactly
    8 + header length + the largest data_offsets end; the safetensors library then validates the
    rest of the header (dtypes × shapes, contiguous offsets) without reading a tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            text = f.read(n) if n is not None and n <= min(MAX_HEADER_BYTES, size - 8) else None
    except FileNotFoundError:
        raise _damaged(folder, kind, path, "is missing") from None
    except OSError as e:
        raise _damaged(folder, kind, path, f"cannot be read ({e.strerror})") from None
    if n is None:
        raise _damaged(folder, kind, path, f"is {size} bytes, too short for a header")
    if text is None:
        raise _damaged(
            folder,
            kind,
            path,
            f"is {size} bytes but its header length says {n} (truncated or not safetensors)",
        )
    try:
        header = json.loads(text)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
        raise _damaged(folder, kind, path, f"has a header that is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise _damaged(folder, kind, path, "has a header that is not a JSON object")
    header.pop("__metadata__", None)
    end = 0
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not _naturals(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise _damaged(
                folder, kind, path, f"has malformed data_offsets {offsets!r} for tensor {name}"
            )
        end = max(end, offsets[1])
    if size != 8 + n + end:
        what = "truncated" if size < 8 + n + end else "trailing bytes"
        raise _damaged(
            folder,
            kind,
            path,
            f"is {size} bytes but its header says its data ends at byte {8 + n + end} ({what})",
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except SafetensorError as e:
        raise _damaged(folder, kind, path, f"has an invalid header ({e})") from None
    return set(header)


def check_model_folder(folder: Path) -> None:
    """A full model folder: its JSON files parse, every safetensors file is whole, the index
    names only files that exist and tensors they hold."""
    folder, kind = Path(folder), "model folder"
    for name in MODEL_JSON:
        _json_object(folder, kind, name, required=name == "config.json")
    names = {p: safetensors_names(folder, kind, p) for p in sorted(folder.glob("*.safetensors"))}
    index = _json_object(folder, kind, INDEX_NAME, required=False)
    if index is not None:
        path = folder / INDEX_NAME
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise _damaged(folder, kind, path, "has no weight_map of tensor names to files")
        for tensor, file in weight_map.items():
            shard = folder / file
            if shard.parent != folder or not file.endswith(".safetensors"):
                raise _damaged(folder, kind, path, f"maps {tensor} to {file!r}, not a shard here")
            if shard not in names:
                raise _damaged(folder, kind, path, f"names {file}, which is missing")
            if tensor not in names[shard]:
                raise _damaged(
                    folder, kind, shard, f"lacks tensor {tensor} that {INDEX_NAME} lists"
                )
    if not names and not any(folder.glob("pytorch_model*.bin")):
        raise _damaged(folder, kind, folder / "model.safetensors", "is missing (no weights)")


def check_adapter_folder(folder: Path) -> None:
    """A LoRA adapter folder: adapter_config.json parses and adapter_model.safetensors is whole."""
    folder, kind = Path(folder), "adapter folder"
    _json_object(folder, kind, ADAPTER_CONFIG)
    safetensors_names(folder, kind, folder / ADAPTER_WEIGHTS)
