"""The streaming merge: base and experts read tensor by tensor, merged, written as shards.

A read-ahead thread (`merges.stream`) reads the next units while one is merged, and a
write-behind thread writes the previous unit's output. Tensors whose
merge is row-separable (the mean task vector of embeddings, `lm_head` and norms, W_0 kept,
element-wise methods such as `average` and `task_arithmetic`) go through in row blocks of at most
`BLOCK_ELEMENTS` entries, so even a 100278 x 4096 embedding never sits in memory whole; a
method that needs a tensor whole gets it whole, and `merge.json` says which tensors were.
Output appears in a hidden sibling folder, renamed only when complete (`mergeeval.outputs`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from mergeeval.outputs import atomic_dir
from merges import provenance
from merges.adapter_out import AdapterWriter
from merges.checks import check_compatible, check_inputs, read_config, tokenizer_files
from merges.device import resolve_device
from merges.errors import MergeInputError
from merges.io import ShardedWriter
from merges.policy import is_block_linear, tensor_role
from merges.spec import GENERATION_CONFIG_SOURCES, MergeSpec
from merges.stream import Job, ReadAhead, row_blocks
from merges.unit_merge import COPIED, TensorDiag, UnitMerger

__all__ = ["MergeSpec", "check_compatible", "run_merge"]

log = logging.getLogger("merges")

BLOCK_ELEMENTS = 1 << 24  # 16 M entries: 64 MB per fp32 row block
READ_AHEAD_BYTES = 256 * 1024**2
GENERATION_CONFIG = "generation_config.json"


def _roles(base, method, rest_policy) -> dict[str, str]:
    return {
        n: tensor_role(n, info.shape, method, rest_policy)
        if info.dtype.is_floating_point
        else COPIED
        for n, info in base.tensors.items()
    }


def _jobs(order: list[str], base, experts, roles: dict[str, str], method) -> list[Job]:
    """Row blocks where the merge is row-separable, the whole tensor otherwise. Where every
    expert is an adapter holding factors for a method tensor and the method has a factored path,
    the whole tensor with the experts' low-rank factors instead of dense task vectors."""
    jobs = []
    for name in order:
        role = roles[name]
        factored = (
            role == "method"
            and method.factored is not None
            and all(e.is_delta and e.low_rank(name) for e in experts)
        )
        separable = not factored and (
            role in ("mean_delta", "base") or (role == "method" and method.elementwise)
        )
        blocks = row_blocks(base.shape(name), BLOCK_ELEMENTS) if separable else [None]
        for i, rows in enumerate(blocks):
            jobs.append(
                Job(name, rows, i == len(blocks) - 1, role not in ("base", COPIED), factored)
            )
    return jobs


def _copy_side_files(spec: MergeSpec, folder: Path, out_dtype: str, tok_src: Path) -> Path | None:
    """config.json from the base (dtype updated); tokenizer files from the tokenizer source;
    generation_config.json per `spec.generation_config_from`. Returns the generation config copied."""
    cfg = read_config(Path(spec.base))
    for key in ("torch_dtype", "dtype"):
        if key in cfg or key == "torch_dtype":
            cfg[key] = out_dtype
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in tokenizer_files(tok_src):
        shutil.copyfile(tok_src / f, folder / f)
    gen = generation_config_source(spec, tok_src)
    if gen is not None:
        shutil.copyfile(gen, folder / GENERATION_CONFIG)
    return gen


def generation_config_source(spec: MergeSpec, tok_src: Path) -> Path | None:
    """The generation_config.json a merge copies: `base` the base's; `tokenizer` the tokenizer
    source's, else the base's (the behaviour before the choice existed); `none` none."""
    _check_generation_config_from(spec)
    folders = {"base": [spec.base], "tokenizer": [tok_src, spec.base], "none": []}
    folders = folders[spec.generation_config_from]
    return next(
        (Path(d) / GENERATION_CONFIG for d in folders if (Path(d) / GENERATION_CONFIG).is_file()),
        None,
    )


def _check_generation_config_from(spec: MergeSpec) -> None:
    if spec.generation_config_from not in GENERATION_CONFIG_SOURCES:
        raise MergeInputError(
            f"unknown generation config source {spec.generation_config_from!r}; "
            f"valid: {', '.join(GENERATION_CONFIG_SOURCES)}"
        )


def _adapter_writer(spec, tmp, plan, base, roles, merger, rank) -> AdapterWriter:
    """The adapter output: block Linear weights factored, every other tensor whose Δ* is not zero
    (embeddings and lm_head included) kept whole."""
    writer = AdapterWriter(
        tmp,
        plan,
        modules={
            n for n, r in roles.items() if r == "method" and is_block_linear(n, base.shape(n))
        },
        tracked={n for n, r in roles.items() if r not in ("base", COPIED)},
        out_dtype=merger.out_dtype,
        base_name=str(Path(spec.base).resolve()),
        rank=rank,
        energy=spec.adapter_energy,
    )
    merger.sink = writer
    return writer


def _write(writer: ShardedWriter, name: str, out: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    writer.write(name, out)
    return buf


def run_merge(spec: MergeSpec, progress: bool = True) -> dict:
    """Merge `spec.experts` into `spec.base` with `spec.method`; return the merge.json record."""
    t_start = time.perf_counter()
    _check_generation_config_from(spec)
    method, params, base, experts, grams, tok_src, adapter_rank = check_inputs(spec)
    device = resolve_device(spec.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    merger = UnitMerger(spec, method, params, grams, device, [e.is_delta for e in experts])
    roles = _roles(base, method, spec.rest_policy)
    plan = [
        (n, merger.out_dtype if roles[n] != COPIED else base.tensors[n].dtype, base.shape(n))
        for n in sorted(base.names())
    ]
    with atomic_dir(Path(spec.output)) as tmp:
        if spec.output_format == "adapter":
            writer = _adapter_writer(spec, tmp, plan, base, roles, merger, adapter_rank)
        else:
            writer = ShardedWriter(tmp, plan, spec.max_shard_bytes)
        jobs = _jobs(writer.order, base, experts, roles, method)
        diagnostics, timings = {}, {}
        reader = ReadAhead(jobs, base, experts, READ_AHEAD_BYTES)
        write_behind = ThreadPoolExecutor(1, thread_name_prefix="merge-write")  # one unit in flight
        pending = None
        bar = tqdm(
            total=len(writer.order),
            desc=f"merge {method.name}",
            unit="tensor",
            disable=not progress,
        )
        try:
            t0, diag = time.perf_counter(), None
            for unit in reader:
                name = unit.job.name
                if diag is None and merger.sink is not None:
                    merger.sink.start(name)
                diag = diag or TensorDiag(roles[name], len(experts))
                diag.whole = unit.job.rows is None
                out, buf = merger(unit, diag, reader.release)
                if unit.job.last and merger.sink is not None:
                    merger.sink.finish(name, base)
                reader.done(unit)
                if pending is not None:
                    merger.pool.give(pending.result())
                pending = write_behind.submit(_write, writer, name, out, buf)
                del out
                if unit.job.last:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    timings[name] = round(time.perf_counter() - t0, 4)
                    diagnostics[name] = diag.record()
                    t0, diag = time.perf_counter(), None
                    bar.update()
            if pending is not None:
                merger.pool.give(pending.result())
        finally:
            reader.close()
            write_behind.shutdown(wait=True)
            merger.close()
            bar.close()
        writer.close()
        gen_src = _copy_side_files(spec, tmp, spec.dtype, tok_src)
        if spec.output_format == "adapter":
            (tmp / "config.json").unlink()  # an adapter folder: its base holds the model config
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
            generation_config=gen_src,
            adapters=[e.describe() if e.is_delta else None for e in experts],
            output=writer.summary() if spec.output_format == "adapter" else None,
        )
        (tmp / provenance.MERGE_JSON).write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s (%s, %.1f s)", spec.output, method.name, record["timings"]["total_s"])
    return record
