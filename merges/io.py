"""Safetensors checkpoints read and written one tensor at a time.

Reading parses the safetensors header (8-byte little-endian length + JSON) and `pread`s one
tensor's bytes into a fresh buffer. Unlike `safe_open`, nothing stays memory-mapped, so the
process's resident set holds only the tensors in flight, which is what the memory bound needs.
Writing plans every shard's header up front (all names, shapes and dtypes are known from the
base), then appends tensor bytes in header order, so no shard is ever held in memory.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from merges.errors import MergeInputError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and byte range inside the file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def _corrupt(path: Path, what: str) -> MergeInputError:
    return MergeInputError(
        f"{path}: corrupt safetensors file ({what}); download or save the model again"
    )


def _naturals(xs) -> bool:
    """A JSON list of non-negative integers."""
    return isinstance(xs, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
    )


def _entry(path: Path, name: str, h, base: int, size: int) -> TensorInfo:
    """One header entry, checked: dtype known, shape and byte range agree and lie in the file."""
    if not isinstance(h, dict) or not {"dtype", "shape", "data_offsets"} <= set(h):
        raise _corrupt(path, f"entry {name!r} lacks dtype, shape or data_offsets")
    dtype, shape, offsets = h["dtype"], h["shape"], h["data_offsets"]
    if dtype not in DTYPES:
        raise MergeInputError(f"{path}: tensor {name} has unsupported dtype {dtype!r}")
    if (
        not _naturals(shape)
        or not _naturals(offsets)
        or len(offsets) != 2
        or offsets[0] > offsets[1]
    ):
        raise _corrupt(path, f"tensor {name}: shape {shape!r} or offsets {offsets!r} malformed")
    need = math.prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size()
    if offsets[1] - offsets[0] != need:
        raise _corrupt(
            path,
            f"tensor {name}: offsets span {offsets[1] - offsets[0]} bytes, "
            f"but {dtype}{shape} needs {need}",
        )
    if base + offsets[1] > size:
        raise _corrupt(path, f"tensor {name} ends past the end of the file (truncated?)")
    return TensorInfo(path, DTYPES[dtype], tuple(shape), base + offsets[0], base + offsets[1])


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and bound a safetensors header into `{name: TensorInfo}` and its `__metadata__`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _corrupt(path, f"only {len(head)} bytes long")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise _corrupt(path, f"header length {n} exceeds the file's {size} bytes")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise MergeInputError(f"missing safetensors shard: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    infos = {name: _entry(path, name, h, base, size) for name, h in header.items()}
    spans = sorted((i.start, i.end, name) for name, i in infos.items() if i.end > i.start)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise _corrupt(path, f"tensors {a} and {b} overlap")
    return infos, meta


def read_tensor(
    name: str,
    info: TensorInfo,
    rows: tuple[int, int] | None = None,
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """Read one tensor (or rows r0:r1 of its first dimension) with pread into a CPU tensor:
    a new one, or a view of the uint8 buffer `into` (reused buffers spare the page faults)."""
    start, end, shape = info.start, info.end, info.shape
    if rows is not None:
        r0, r1 = rows
        row_bytes = (end - start) // shape[0] if shape and shape[0] else 0
        start, end = info.start + r0 * row_bytes, info.start + r1 * row_bytes
        shape = (r1 - r0, *shape[1:])
    nbytes = end - start
    buf = torch.empty(nbytes, dtype=torch.uint8) if into is None else into[:nbytes]
    if nbytes:
        fd = os.open(info.file, os.O_RDONLY)
        try:
            view = memoryview(buf.numpy())
            got = 0
            while got < nbytes:
                k = os.preadv(fd, [view[got:]], start + got)
                if k <= 0:
                    raise MergeInputError(f"{info.file} is truncated (tensor {name})")
                got += k
        finally:
            os.close(fd)
    return buf.view(info.dtype).reshape(shape)


class TensorStore:
    """Named tensors spread over several safetensors files, read one at a time."""

    is_delta = False  # what `read` returns: weights (an adapter's reader returns task vectors)

    def __init__(self, files: Iterable[Path]):
        self.tensors: dict[str, TensorInfo] = {}
        for path in files:
            infos, _ = read_header(Path(path))
            dup = set(infos) & set(self.tensors)
            if dup:
                raise MergeInputError(f"tensor {sorted(dup)[0]} appears in two files ({path})")
            self.tensors.update(infos)

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def nbytes(self, name: str, rows: tuple[int, int] | None = None) -> int:
        """Bytes of `read(name, rows)`."""
        info = self.tensors[name]
        size = info.end - info.start
        return size if rows is None else size * (rows[1] - rows[0]) // info.shape[0]

    def read(
        self, name: str, rows: tuple[int, int] | None = None, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        return read_tensor(name, self.tensors[name], rows, into)


class Checkpoint(TensorStore):
    """A Hugging Face model folder's safetensors weights (single file or sharded with index)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MergeInputError(f"model folder not found: {self.folder}")
        index = self.folder / INDEX_NAME
        single = self.folder / SINGLE_NAME
        if index.exists():
            weight_map = _weight_map(index)
            files = sorted(set(weight_map.values()))
        elif single.exists():
            weight_map, files = None, [SINGLE_NAME]
        else:
            raise MergeInputError(
                f"{self.folder} has neither {INDEX_NAME} nor {SINGLE_NAME}; "
                "point at a Hugging Face folder with safetensors weights"
            )
        super().__init__(self.folder / f for f in files)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.tensors))
            if missing:
                raise MergeInputError(
                    f"{index} lists {len(missing)} tensor(s) absent from its shards, e.g. {missing[0]}"
                )


def _weight_map(index: Path) -> dict[str, str]:
    """The index's `weight_map`, checked: tensor name -> a shard file inside the folder."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise MergeInputError(
            f"{index} is malformed ({type(e).__name__}: {e}); expected JSON with a 'weight_map' "
            "object; download the model again or delete the index of a single-file model"
        ) from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise MergeInputError(f"{index}: 'weight_map' must map tensor names to shard file names")
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise MergeInputError(
                f"{index} names shard {shard!r}; shards must be .safetensors files in the model folder"
            )
    return weight_map


def _header_bytes(
    entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
) -> tuple[bytes, list[int]]:
    """Build a safetensors header (padded to 8 bytes) and each tensor's byte size."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset, sizes = 0, []
    for name, dtype, shape in entries:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        sizes.append(size)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, sizes


class ShardedWriter:
    """Writes tensors, in a fixed planned order, into HF-named shards plus the index json."""

    def __init__(
        self,
        folder: Path,
        plan: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
        max_shard_bytes: int = 5 * 1024**3,
    ):
        self.folder = Path(folder)
        shards: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
        size = 0
        for entry in plan:
            nbytes = math.prod(entry[2]) * torch.empty((), dtype=entry[1]).element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(entry)
            size += nbytes
        n = len(shards)
        self.order: list[str] = []
        self._file_of: dict[str, str] = {}
        self._expected: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        self._shards = []
        self.total_bytes = 0
        for i, entries in enumerate(shards):
            fname = SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            head, sizes = _header_bytes(entries)
            self._shards.append((fname, head))
            for (name, dtype, shape), s in zip(entries, sizes, strict=True):
                self.order.append(name)
                self._file_of[name] = fname
                self._expected[name] = (dtype, shape, s)
                self.total_bytes += s
        self._pos = 0
        self._done = 0  # bytes of the current tensor written so far
        self._fh = None
        self._current = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor, whole or in row blocks; names must arrive in `self.order`."""
        want = self.order[self._pos]
        if name != want:
            raise RuntimeError(f"writer expected tensor {want}, got {name}")
        dtype, shape, size = self._expected[name]
        if tensor.dtype != dtype or tuple(tensor.shape[1:]) != shape[1:]:
            raise RuntimeError(
                f"{name}: planned {dtype}{list(shape)}, got {tensor.dtype}{list(tensor.shape)}"
            )
        fname = self._file_of[name]
        if fname != self._current:
            self._close_file()
            head = dict(self._shards)[fname]
            self._fh = open(self.folder / fname, "wb")
            self._fh.write(head)
            self._current = fname
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._done += data.nbytes
        if self._done > size:
            raise RuntimeError(f"{name}: more than its planned {size} bytes written")
        self._fh.write(memoryview(data))
        if self._done == size:
            self._pos += 1
            self._done = 0

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        """Finish the last shard and write the index (only for several shards)."""
        self._close_file()
        if self._pos != len(self.order):
            raise RuntimeError(f"writer closed after {self._pos} of {len(self.order)} tensors")
        if len(self._shards) > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": self._file_of}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
