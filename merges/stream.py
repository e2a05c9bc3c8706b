"""Read-ahead for the streaming merge: a thread reads the next work units while one is merged.

A unit is one tensor, or a block of its rows, read (raw dtype, CPU) from the base and, where the
merge needs them, every expert. At most `budget` bytes are in flight (read and not yet released
by the merge), except that one unit is always allowed, so memory stays bounded and reading
overlaps merging (`pread` and torch kernels release the GIL).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from merges.io import TensorStore


@dataclass
class Job:
    name: str
    rows: tuple[int, int] | None  # None: the whole tensor
    last: bool  # the tensor's last unit
    with_experts: bool
    factored: bool = False  # the experts' low-rank factors instead of their dense task vectors


@dataclass
class Unit:
    job: Job
    base: torch.Tensor
    experts: list[torch.Tensor]
    nbytes: int
    buffers: list[torch.Tensor]
    factors: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per expert (B_t, A_t)


class BufferPool:
    """Reusable uint8 buffers: a fresh buffer costs a page fault per 4 KB page on first touch.
    At most `max_free` bytes of idle buffers are kept (the largest), so the pool cannot grow
    the merge's memory beyond what is in flight plus that."""

    def __init__(self, max_free: int = 128 * 1024**2):
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()
        self.max_free = max_free

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
            if fits:
                return self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, buf: torch.Tensor) -> None:
        with self._lock:
            self._free.append(buf)
            self._free.sort(key=torch.Tensor.numel, reverse=True)
            while sum(b.numel() for b in self._free) > self.max_free:
                self._free.pop()


def row_blocks(shape: tuple[int, ...], max_elements: int) -> list[tuple[int, int] | None]:
    """Row ranges of at most `max_elements` entries each ([None] for a scalar or empty tensor)."""
    if not shape or shape[0] == 0:
        return [None]
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, max_elements // per_row)
    return [(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]


class ReadAhead:
    """Iterate over `Unit`s in job order; call `done(unit)` when each is merged."""

    def __init__(self, jobs: list[Job], base: TensorStore, experts: list[TensorStore], budget: int):
        self.jobs, self.base, self.experts, self.budget = jobs, base, experts, budget
        self._queue: queue.Queue = queue.Queue()
        self.pool = BufferPool()
        self._cv = threading.Condition()
        self._in_flight = 0
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="merge-read-ahead", daemon=True)
        self._thread.start()

    def _sizes(self, job: Job, stores: list[TensorStore]) -> list[int]:
        return [st.nbytes(job.name, job.rows) for st in stores]

    def _read(self) -> None:
        try:
            for job in self.jobs:
                dense = job.with_experts and not job.factored
                stores = [self.base, *(self.experts if dense else [])]
                sizes = self._sizes(job, stores)
                n = sum(sizes)
                with self._cv:
                    self._cv.wait_for(
                        lambda n=n: (
                            self._stop or self._in_flight == 0 or self._in_flight + n <= self.budget
                        )
                    )
                    if self._stop:
                        return
                    self._in_flight += n
                bufs = [self.pool.take(size) for size in sizes]
                base, *experts = [
                    st.read(job.name, job.rows, b) for st, b in zip(stores, bufs, strict=True)
                ]
                factors = [st.factors(job.name) for st in self.experts] if job.factored else None
                self._queue.put(Unit(job, base, experts, n, bufs, factors))
        except BaseException as e:  # handed to the merging thread
            self._queue.put(e)
            return
        self._queue.put(None)

    def __iter__(self) -> Iterator[Unit]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, unit: Unit, keep_base: bool = False) -> None:
        """The unit's input tensors (all, or all but the base) are no longer used: their
        buffers return to the pool."""
        for b in unit.buffers[1 if keep_base else 0 :]:
            self.pool.give(b)
        unit.buffers = unit.buffers[:1] if keep_base else []

    def done(self, unit: Unit) -> None:
        """The unit is merged: its bytes stop counting against the read-ahead budget."""
        self.release(unit)
        with self._cv:
            self._in_flight -= unit.nbytes
            self._cv.notify_all()

    def close(self) -> None:
        """Stop reading (after an error or at the end) and wait for the thread."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
