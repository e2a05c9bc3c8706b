"""Merging one unit (a tensor, or a block of its rows): W = W_0 + Δ*, with its diagnostics.

On the CPU the element-wise work goes in chunks of `CHUNK_ELEMENTS` entries, so the fp32
temporaries of one chunk stay in cache: forming Δ_t = W_t − W_0 (bf16 inputs promoted on the fly),
the mean task vector or an element-wise method, W_0 + Δ*, its bf16 rounding and the diagnostics.
A method that needs the whole tensor gets the whole [T, *shape] stack; only its output is chunked.
Non-finite input is found from the task vectors' norms, so it costs no extra pass.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from merges.errors import MergeInputError
from merges.registry import FactoredTask, TensorTask
from merges.spec import FACTOR_DTYPES, OUTPUT_DTYPES
from merges.stream import BufferPool

CHUNK_ELEMENTS = 1 << 18  # 1 MB per fp32 temporary: cache-resident on the CPU
MAX_WORKERS = 8
COPIED = "copied (non-float)"


class TensorDiag:
    """Per-tensor diagnostics accumulated over its units and chunks (spec §1.5.5 for bf16).

    bf16_lost_frac: share of entries with Δ* ≠ 0 where bf16(W_0 + Δ*) == W_0;
    bf16_rel_err:   ‖bf16(W_0 + Δ*) − (W_0 + Δ*)‖ / ‖Δ*‖.
    """

    def __init__(self, role: str, n_experts: int):
        self.role, self.blocks, self.whole, self.info = role, 0, False, {}
        self.expert_sq = [0.0] * n_experts
        self.merged_sq = self.err_sq = 0.0
        self.n_nonzero = self.n_lost = 0

    def absorb(self, other: TensorDiag) -> None:
        """Add another accumulator's sums (a worker's share of the same unit)."""
        self.expert_sq = [a + b for a, b in zip(self.expert_sq, other.expert_sq, strict=True)]
        self.merged_sq += other.merged_sq
        self.err_sq += other.err_sq
        self.n_nonzero += other.n_nonzero
        self.n_lost += other.n_lost
        self.info.update(other.info)

    def record(self) -> dict:
        if self.role == COPIED:
            return {"role": self.role}
        out = {"role": self.role, "expert_delta_norms": [math.sqrt(x) for x in self.expert_sq]}
        out["processed"] = "whole" if self.whole else f"{self.blocks} row block(s)"
        if self.info:
            out["method"] = self.info
        dn = math.sqrt(self.merged_sq)
        out["merged_delta_norm"] = dn
        out["bf16_lost_frac"] = self.n_lost / self.n_nonzero if self.n_nonzero else 0.0
        out["bf16_rel_err"] = math.sqrt(self.err_sq) / dn if dn else 0.0
        return out


@contextmanager
def _one_thread():
    """Chunks are too small to split across threads: one intra-op thread avoids the barrier
    waits that make small parallel kernels slow when the read-ahead thread shares the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _sq(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x)) ** 2


class UnitMerger:
    """Turns a `stream.Unit` into its output tensor (CPU, output dtype), updating a TensorDiag."""

    def __init__(self, spec, method, params, grams, device: torch.device, is_delta=None):
        self.spec, self.method, self.params, self.grams = spec, method, params, grams
        # per expert: its reader returns task vectors (an adapter), not weights
        self.is_delta = list(is_delta) if is_delta is not None else [False] * len(spec.experts)
        self.sink = None  # an output that wants Δ* itself: sink.put(name, flat offset, Δ* piece)
        self.device = device
        self.out_dtype = OUTPUT_DTYPES[spec.dtype]
        self.factor_dtype = FACTOR_DTYPES[spec.factor_dtype]
        self.chunk = CHUNK_ELEMENTS if device.type == "cpu" else 1 << 62
        self.pool = BufferPool()
        n = min(MAX_WORKERS, torch.get_num_threads()) if device.type == "cpu" else 1
        self._workers = [  # one single-threaded worker per core (each its own torch thread state)
            ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
            for _ in range(n if n > 1 else 0)
        ]

    def __call__(self, unit, diag: TensorDiag, release) -> tuple[torch.Tensor, torch.Tensor]:
        """(output tensor, its buffer: give it back to `self.pool` once written); `release(unit)`
        is called as soon as the unit's input tensors are no longer needed."""
        n = unit.base.numel()
        if diag.role == COPIED:
            buf = self.pool.take(unit.base.numel() * unit.base.element_size())
            out = buf[: n * unit.base.element_size()].view(unit.base.dtype)
            out.copy_(unit.base.reshape(-1))
            release(unit)
            return out.view(unit.base.shape), buf
        diag.blocks += 1
        base = unit.base.reshape(-1)
        experts = [e.reshape(-1) for e in unit.experts]
        unit.experts = []
        size = torch.empty((), dtype=self.out_dtype).element_size()
        buf = self.pool.take(n * size)
        out = buf[: n * size].view(self.out_dtype)
        whole_method = diag.role == "method" and (
            not self.method.elementwise or unit.factors is not None
        )
        at0 = _offset(unit)
        if whole_method:
            merged = self._factored(unit, diag) if unit.factors is not None else None
            if merged is None:
                deltas = torch.empty((len(self.is_delta), base.numel()), device=self.device)
                if unit.factors is not None:  # the factored path declined these parameters
                    self._dense_from_factors(unit, deltas, diag)
                else:
                    with _one_thread():
                        for s, e in self._chunks(base.numel()):
                            w0 = base[s:e].to(self.device, torch.float32)
                            raw = [x[s:e] for x in experts]
                            self._deltas(unit.job.name, w0, raw, deltas[:, s:e], diag)
                        del raw
            del experts
            w0_raw = base
            release(unit, keep_base=True)  # the experts' buffers go back now
            if merged is None:
                w0_full = (
                    base.to(self.device, torch.float32).view(unit.base.shape)
                    if self.method.needs_base
                    else None
                )
                shaped = deltas.view(-1, *unit.base.shape)
                merged = self._method(unit.job.name, shaped, diag, w0_full)
                del deltas, w0_full
            with _one_thread():
                for s, e in self._chunks(base.numel()):
                    w0 = w0_raw[s:e].to(self.device, torch.float32)
                    self._finish(
                        unit.job.name, w0, w0_raw[s:e], merged[s:e], out[s:e], diag, at0 + s
                    )
        else:
            with _one_thread():
                self._chunked(unit, base, experts, out, diag)
            release(unit)
        return out.view(unit.base.shape), buf

    def _factored(self, unit, diag: TensorDiag) -> torch.Tensor | None:
        """Δ* from the experts' factors (B_t, A_t) by the method's exact low-rank path, or None
        where it declines these parameters. ‖B_t A_t‖²_F = Σ (B_tᵀB_t) ∘ (A_t A_tᵀ)."""
        factors = [
            (b.to(self.device, self.factor_dtype), a.to(self.device, self.factor_dtype))
            for b, a in unit.factors
        ]
        task = FactoredTask(unit.job.name, factors, tuple(unit.base.shape), self.factor_dtype)
        merged = self.method.factored(task, self.params)
        if merged is None:
            return None
        for t, (b, a) in enumerate(unit.factors):
            diag.expert_sq[t] += float(((b.T @ b) * (a @ a.T)).sum())
        diag.info.update(task.info)
        diag.info["factored"] = True
        return merged.to(torch.float32).reshape(-1)

    def _dense_from_factors(self, unit, deltas: torch.Tensor, diag: TensorDiag) -> None:
        """deltas[t] = B_t A_t (float64 product rounded once to float32), as the adapter reads it."""
        for t, (b, a) in enumerate(unit.factors):
            deltas[t].copy_((b @ a).reshape(-1))
            diag.expert_sq[t] += _sq(deltas[t])

    def _chunked(self, unit, base, experts, out, diag: TensorDiag) -> None:
        """The element-wise path: every step of one chunk before the next, chunks shared out
        (interleaved) among the worker threads; their diagnostics are added in worker order."""
        chunks = self._chunks(base.numel())
        k = min(len(self._workers), len(chunks))
        if k < 2:
            return self._chunk_range(unit, base, experts, out, diag, chunks)
        parts = [TensorDiag(diag.role, len(experts)) for _ in range(k)]
        futures = [
            self._workers[i].submit(
                self._chunk_range, unit, base, experts, out, parts[i], chunks[i::k]
            )
            for i in range(k)
        ]
        for f in futures:
            f.result()
        for p in parts:
            diag.absorb(p)

    def close(self) -> None:
        for w in self._workers:
            w.shutdown(wait=True)

    def _chunk_range(self, unit, base, experts, out, diag: TensorDiag, chunks) -> None:
        for s, e in chunks:
            w0 = base[s:e].to(self.device, torch.float32)
            if diag.role == "base":
                self._finite(w0, unit.job.name)
                out[s:e] = w0.to(self.out_dtype).cpu()
                continue
            d = torch.empty((len(experts), e - s), device=self.device)
            self._deltas(unit.job.name, w0, [x[s:e] for x in experts], d, diag)
            if diag.role == "mean_delta":
                merged = mean0(d)
            else:
                merged = self._method(unit.job.name, d, diag, w0)
            self._finish(unit.job.name, w0, base[s:e], merged, out[s:e], diag, _offset(unit) + s)

    def _chunks(self, n: int):
        return [(s, min(n, s + self.chunk)) for s in range(0, n, self.chunk)] or [(0, 0)]

    def _finite(self, w0: torch.Tensor, name: str) -> None:
        if not bool(torch.isfinite(w0).all()):
            raise MergeInputError(
                f"non-finite values (nan/inf) in tensor {name} of base {self.spec.base}"
            )

    def _deltas(self, name, w0, raw_experts, out, diag) -> None:
        """out[t] = W_t − W_0 for one chunk; a non-finite norm names the input that caused it."""
        for t, raw in enumerate(raw_experts):
            if self.is_delta[t]:
                out[t].copy_(raw)
            else:
                torch.sub(raw.to(self.device), w0, out=out[t])
            sq = _sq(out[t])
            if not math.isfinite(sq):
                self._finite(w0, name)
                raise MergeInputError(
                    f"non-finite values (nan/inf) in tensor {name} of expert {self.spec.experts[t]}"
                )
            diag.expert_sq[t] += sq

    def _method(self, name: str, deltas: torch.Tensor, diag: TensorDiag, w0) -> torch.Tensor:
        task = TensorTask(name, deltas, None, self.factor_dtype)
        if self.method.needs_base:
            task.base = w0
        if self.grams is not None:
            task.grams = [g.gram_for(name).to(self.device) for g in self.grams]
        merged = self.method.fn(task, self.params).to(torch.float32).reshape(-1)
        diag.info.update(task.info)
        return merged

    def _finish(self, name, w0, w0_raw, merged, out, diag: TensorDiag, at: int = 0) -> None:
        """out = W_0 + Δ* in the output dtype, and the diagnostics of Δ* and its bf16 rounding;
        Δ* also goes to the sink (entries at.. of the tensor), if there is one."""
        if self.sink is not None:
            self.sink.put(name, at, merged)
        sq = _sq(merged)
        if not math.isfinite(sq):
            raise FloatingPointError(
                f"method {self.method.name!r} produced non-finite values for tensor {name}"
            )
        diag.merged_sq += sq
        nonzero = self._count_nonzero(merged)
        diag.n_nonzero += nonzero
        full = merged + w0
        if self.out_dtype == torch.bfloat16 and full.device == out.device:
            rounded = out.copy_(full)  # the same round-to-nearest-even as .to(bfloat16)
        else:
            rounded = full.to(torch.bfloat16)
            out.copy_(rounded if self.out_dtype == torch.bfloat16 else full)
        if w0_raw.dtype == torch.bfloat16:  # W_0 is exact in bf16: Δ* = 0 entries round to it
            changed = self._count_nonzero(torch.sub(rounded, w0))
            diag.n_lost += nonzero - changed
        else:
            diag.n_lost += int(torch.count_nonzero((rounded.float() == w0) & (merged != 0)))
        diag.err_sq += _sq(torch.sub(rounded, full))

    def _count_nonzero(self, x: torch.Tensor) -> int:
        """count_nonzero, as Σ|sign(x)| on CPU chunks (exact below 2^24 entries, and several
        times faster than torch.count_nonzero there)."""
        if x.device.type == "cpu" and x.numel() < 1 << 24:
            return int(torch.sign(x).abs_().sum())
        return int(torch.count_nonzero(x))


def _offset(unit) -> int:
    """The flat index of the unit's first entry within its tensor."""
    rows = unit.job.rows
    return 0 if rows is None else rows[0] * (unit.base[0].numel() if unit.base.ndim else 1)


def mean0(d: torch.Tensor) -> torch.Tensor:
    """d.mean(0) for a [T, k] stack, bit for bit (sequential sum, then ÷ T), in fewer passes."""
    out = d[0].clone()
    for x in d[1:]:
        out.add_(x)
    return out.div_(d.shape[0])
