"""The streaming merge: base and experts read tensor by tensor, merged, written as shards.

A read-ahead thread (`merges.stream`) reads the next units while one is merged. Tensors whose
merge is row-separable (the mean task vector of embeddings, `lm_head` and norms, W_0 kept,
element-wise methods such as `average` and `task_arithmetic`) go through in row blocks of at most
`BLOCK_ELEMENTS` entries, so even a 100278 x 4096 embedding never sits in memory whole; a
method that needs a tensor whole gets it whole, and `merge.json` says which tensors were.
Output appears in a hidden sibling folder, renamed only when complete (`mergeeval.outputs`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mergeeval.outputs import atomic_dir
from merges import provenance
from merges.checks import check_compatible, check_inputs, read_config, tokenizer_files
from merges.device import resolve_device
from merges.errors import MergeInputError
from merges.io import ShardedWriter
from merges.policy import tensor_role
from merges.registry import TensorTask
from merges.spec import FACTOR_DTYPES, OUTPUT_DTYPES, MergeSpec
from merges.stream import Job, ReadAhead, Unit, row_blocks

__all__ = ["MergeSpec", "check_compatible", "run_merge"]

log = logging.getLogger("merges")

BLOCK_ELEMENTS = 1 << 24  # 16 M entries: 64 MB per fp32 row block
READ_AHEAD_BYTES = 512 * 1024**2
COPIED = "copied (non-float)"


def _finite_or_fail(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise MergeInputError(f"non-finite values (nan/inf) in {what}")


class TensorDiag:
    """Per-tensor diagnostics accumulated over its row blocks (spec §1.5.5 for the bf16 ones).

    bf16_lost_frac: share of entries with Δ* ≠ 0 where bf16(W_0 + Δ*) == W_0;
    bf16_rel_err:   ‖bf16(W_0 + Δ*) − (W_0 + Δ*)‖ / ‖Δ*‖.
    """

    def __init__(self, role: str, n_experts: int):
        self.role, self.blocks, self.whole, self.info = role, 0, False, {}
        self.expert_sq = [0.0] * n_experts
        self.merged_sq = self.err_sq = 0.0
        self.n_nonzero = self.n_lost = 0

    def add_experts(self, deltas: torch.Tensor) -> None:
        for t, d in enumerate(deltas):
            self.expert_sq[t] += float(torch.linalg.vector_norm(d)) ** 2

    def add_block(self, w0: torch.Tensor, merged, full: torch.Tensor, rounded) -> None:
        """One block's W_0, Δ* (None: W_0 kept), W_0 + Δ* and its bf16 rounding (fp32)."""
        self.blocks += 1
        if merged is None:
            return
        self.merged_sq += float(torch.linalg.vector_norm(merged)) ** 2
        nz = merged != 0
        self.n_nonzero += int(nz.sum())
        self.n_lost += int((nz & (rounded == w0)).sum())
        self.err_sq += float(torch.linalg.vector_norm(rounded.float() - full)) ** 2

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


class _Merger:
    """Merges units: W_0 + Δ* in fp32 on the device, cast to the output dtype on the CPU."""

    def __init__(self, spec, method, params, grams, device):
        self.spec, self.method, self.params, self.grams, self.device = (
            spec,
            method,
            params,
            grams,
            device,
        )
        self.out_dtype = OUTPUT_DTYPES[spec.dtype]
        self.factor_dtype = FACTOR_DTYPES[spec.factor_dtype]

    def __call__(self, unit: Unit, diag: TensorDiag) -> torch.Tensor:
        name, role = unit.job.name, diag.role
        if role == COPIED:
            return unit.base
        w0 = unit.base.to(self.device, torch.float32)
        _finite_or_fail(w0, f"tensor {name} of base {self.spec.base}")
        deltas = merged = None
        if role != "base":
            deltas = torch.empty((len(unit.experts), *w0.shape), device=self.device)
            for t, raw in enumerate(unit.experts):
                wt = raw.to(self.device, torch.float32)
                _finite_or_fail(wt, f"tensor {name} of expert {self.spec.experts[t]}")
                torch.sub(wt, w0, out=deltas[t])
                del wt
            unit.experts = []  # the raw copies are no longer needed
            diag.add_experts(deltas)
            merged = self._delta(name, role, deltas, diag)
            del deltas
        full = w0 if merged is None else w0 + merged
        rounded = full.to(torch.bfloat16)
        diag.add_block(w0, merged, full, rounded.float() if merged is not None else None)
        out = rounded if self.out_dtype == torch.bfloat16 else full.to(self.out_dtype)
        return out.cpu()

    def _delta(self, name, role, deltas, diag) -> torch.Tensor:
        if role == "mean_delta":
            return deltas.mean(0)
        task = TensorTask(name, deltas, None, self.factor_dtype)
        if self.grams is not None:
            task.grams = [g.gram_for(name).to(self.device) for g in self.grams]
        merged = self.method.fn(task, self.params).to(torch.float32)
        diag.info.update(task.info)
        if not bool(torch.isfinite(merged).all()):
            raise FloatingPointError(
                f"method {self.method.name!r} produced non-finite values for tensor {name}"
            )
        return merged


def _roles(base, method, rest_policy) -> dict[str, str]:
    return {
        n: tensor_role(n, info.shape, method, rest_policy)
        if info.dtype.is_floating_point
        else COPIED
        for n, info in base.tensors.items()
    }


def _jobs(order: list[str], base, roles: dict[str, str], method) -> list[Job]:
    """Row blocks where the merge is row-separable, the whole tensor otherwise."""
    jobs = []
    for name in order:
        role = roles[name]
        separable = role in ("mean_delta", "base") or (role == "method" and method.rowwise)
        blocks = row_blocks(base.shape(name), BLOCK_ELEMENTS) if separable else [None]
        for i, rows in enumerate(blocks):
            jobs.append(Job(name, rows, i == len(blocks) - 1, role not in ("base", COPIED)))
    return jobs


def _copy_side_files(spec: MergeSpec, folder: Path, out_dtype: str, tok_src: Path) -> None:
    """config.json from the base (dtype updated); generation config and tokenizer from the tokenizer source."""
    cfg = read_config(Path(spec.base))
    for key in ("torch_dtype", "dtype"):
        if key in cfg or key == "torch_dtype":
            cfg[key] = out_dtype
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in (*tokenizer_files(tok_src), "generation_config.json"):
        src = tok_src / f
        if not src.exists() and f == "generation_config.json":
            src = Path(spec.base) / f
        if src.exists():
            shutil.copyfile(src, folder / f)


def run_merge(spec: MergeSpec, progress: bool = True) -> dict:
    """Merge `spec.experts` into `spec.base` with `spec.method`; return the merge.json record."""
    t_start = time.perf_counter()
    method, params, base, experts, grams, tok_src = check_inputs(spec)
    device = resolve_device(spec.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    merger = _Merger(spec, method, params, grams, device)
    roles = _roles(base, method, spec.rest_policy)
    plan = [
        (n, merger.out_dtype if roles[n] != COPIED else base.tensors[n].dtype, base.shape(n))
        for n in sorted(base.names())
    ]
    with atomic_dir(Path(spec.output)) as tmp:
        writer = ShardedWriter(tmp, plan, spec.max_shard_bytes)
        jobs = _jobs(writer.order, base, roles, method)
        diagnostics, timings = {}, {}
        reader = ReadAhead(jobs, base, experts, READ_AHEAD_BYTES)
        bar = tqdm(total=len(writer.order), desc=f"merge {method.name}", unit="tensor")
        bar.disable = not progress
        try:
            t0, diag = time.perf_counter(), None
            for unit in reader:
                name = unit.job.name
                diag = diag or TensorDiag(roles[name], len(experts))
                diag.whole = unit.job.rows is None
                out = merger(unit, diag)
                writer.write(name, out)
                del out
                reader.release(unit)
                if unit.job.last:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    timings[name] = round(time.perf_counter() - t0, 4)
                    diagnostics[name] = diag.record()
                    t0, diag = time.perf_counter(), None
                    bar.update()
        finally:
            reader.close()
            bar.close()
        writer.close()
        _copy_side_files(spec, tmp, spec.dtype, tok_src)
        record = provenance.merge_record(
            spec,
            method,
            params,
            device,
            tok_src,
            grams,
            timings,
            diagnostics,
            time.perf_counter() - t_start,
        )
        (tmp / provenance.MERGE_JSON).write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s (%s, %.1f s)", spec.output, method.name, record["timings"]["total_s"])
    return record
