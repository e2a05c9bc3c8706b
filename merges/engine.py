"""The streaming merge: base and experts read tensor by tensor, merged, written as shards.

Peak memory is the (T+1) input tensors of one name in fp32, the method's workspace and one
output tensor; never a whole model. Output appears in a temporary sibling folder that is renamed
only when complete, so an interrupted or failed run leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mergeeval.outputs import atomic_dir, guard_output
from merges import provenance
from merges.device import resolve_device
from merges.errors import MergeInputError
from merges.grams import GramStore
from merges.io import Checkpoint, ShardedWriter
from merges.policy import REST_POLICIES, tensor_role
from merges.registry import TensorTask, get_method

log = logging.getLogger("merges")

OUTPUT_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FACTOR_DTYPES = {"float64": torch.float64, "float32": torch.float32}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


@dataclass
class MergeSpec:
    """Everything one merge depends on (all of it is recorded in merge.json)."""

    method: str
    base: Path
    experts: list[Path]
    output: Path
    params: dict = field(default_factory=dict)
    stats: list[Path] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "bfloat16"
    tokenizer_from: Path | None = None
    rest_policy: str = "mean_delta"
    factor_dtype: str = "float64"
    force: bool = False
    allow_duplicate_experts: bool = False
    max_shard_bytes: int = 5 * 1024**3


def check_compatible(
    base_dir: Path, expert_dirs: list[Path]
) -> tuple[Checkpoint, list[Checkpoint]]:
    """Open the checkpoints and require every expert to have exactly the base's names and shapes."""
    base = Checkpoint(base_dir)
    experts = [Checkpoint(e) for e in expert_dirs]
    for path, ck in zip(expert_dirs, experts, strict=True):
        for name in base.names():
            if name not in ck.tensors:
                raise MergeInputError(
                    f"expert {path} has no tensor {name} (present in base {base_dir})"
                )
            if ck.shape(name) != base.shape(name):
                raise MergeInputError(
                    f"tensor {name}: shape {list(ck.shape(name))} in expert {path} "
                    f"but {list(base.shape(name))} in base {base_dir}"
                )
        extra = sorted(set(ck.names()) - set(base.names()))
        if extra:
            raise MergeInputError(f"expert {path} has tensor {extra[0]} that base {base_dir} lacks")
    return base, experts


def _check_inputs(spec: MergeSpec):
    """Validate everything before any output exists; return (method, params, base, experts, grams, tok_src)."""
    method = get_method(spec.method)
    params = method.parse_params(spec.params)
    for key, value, valid in (
        ("dtype", spec.dtype, OUTPUT_DTYPES),
        ("factor dtype", spec.factor_dtype, FACTOR_DTYPES),
        ("rest policy", spec.rest_policy, REST_POLICIES),
    ):
        if value not in valid:
            raise MergeInputError(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
    if not spec.experts:
        raise MergeInputError("no experts given; pass --expert DIR at least once")
    tok_src = Path(spec.tokenizer_from or spec.experts[0])
    guard_output(
        spec.output,
        [("base", spec.base)]
        + [("expert", e) for e in spec.experts]
        + [("statistics folder", s) for s in spec.stats]
        + [("tokenizer source", tok_src)],
        force=spec.force,
        owned_by=(provenance.MERGE_JSON,),
    )
    _check_duplicates(spec)
    base, experts = check_compatible(Path(spec.base), [Path(e) for e in spec.experts])
    read_config(Path(spec.base))
    tokenizer_files(tok_src)
    grams = None
    if method.needs_stats:
        if len(spec.stats) != len(spec.experts):
            raise MergeInputError(
                f"method {method.name!r} needs statistics: pass --stats DIR once per expert, in expert "
                f"order ({len(spec.experts)} expert(s), {len(spec.stats)} --stats given); "
                "create them with `python -m merges stats`"
            )
        grams = [GramStore(s) for s in spec.stats]
        wanted = {
            n: base.shape(n)[1]
            for n in base.names()
            if tensor_role(n, base.shape(n), method, spec.rest_policy) == "method"
        }
        for g in grams:
            g.check(wanted)
    elif spec.stats:
        raise MergeInputError(f"method {method.name!r} takes no statistics; drop --stats")
    return method, params, base, experts, grams, tok_src


def _check_duplicates(spec: MergeSpec) -> None:
    seen: dict[str, Path] = {}
    for e in spec.experts:
        key = os.path.realpath(e)
        if key in seen and not spec.allow_duplicate_experts:
            raise MergeInputError(
                f"expert {e} is given twice (as {seen[key]} too); drop the repeat, or pass "
                "--allow-duplicate-experts to weight it twice on purpose"
            )
        seen[key] = Path(e)


def read_config(model: Path) -> dict:
    """A model folder's config.json as a dict (one clear error if missing or malformed)."""
    path = Path(model) / "config.json"
    if not path.is_file():
        raise MergeInputError(f"{model} has no config.json; point at a Hugging Face model folder")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MergeInputError(f"{path} is not valid JSON ({e}); download the model again") from None
    if not isinstance(cfg, dict):
        raise MergeInputError(f"{path} is not a JSON object; download the model again")
    return cfg


def tokenizer_files(tok_src: Path) -> list[str]:
    """The tokenizer/chat-template files the tokenizer source has (it must have a tokenizer)."""
    found = [f for f in TOKENIZER_FILES if (Path(tok_src) / f).is_file()]
    if not any(f in found for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise MergeInputError(
            f"tokenizer source {tok_src} has no tokenizer files; pass --tokenizer-from DIR"
        )
    return found


def _finite_or_fail(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise MergeInputError(f"non-finite values (nan/inf) in {what}")


def bf16_rounding(w0: torch.Tensor, delta: torch.Tensor, merged: torch.Tensor) -> dict:
    """How much of Δ* a bf16 checkpoint keeps (spec §1.5.5); `merged` is W_0 + Δ* in fp32.

    lost_frac: share of entries with Δ* ≠ 0 where bf16(W_0 + Δ*) == W_0;
    rel_err:   ‖bf16(W_0 + Δ*) − W_0 − Δ*‖ / ‖Δ*‖.
    """
    rounded = merged.to(torch.bfloat16).float()
    nz = delta != 0
    n_nz = int(nz.sum())
    lost = int(((rounded == w0) & nz).sum())
    dn = float(delta.norm())
    err = float((rounded - w0 - delta).norm())
    return {"bf16_lost_frac": lost / n_nz if n_nz else 0.0, "bf16_rel_err": err / dn if dn else 0.0}


def _merge_one(name, base, experts, spec, method, params, grams, device, factor_dtype, out_dtype):
    """Merge one tensor; return (output tensor on CPU, diagnostics dict)."""
    w0_raw = base.read(name)
    if not w0_raw.is_floating_point():
        return w0_raw, {"role": "copied (non-float)"}
    w0 = w0_raw.to(device, torch.float32)
    _finite_or_fail(w0, f"tensor {name} of base {spec.base}")
    deltas = torch.empty((len(experts), *w0.shape), dtype=torch.float32, device=device)
    for t, (path, ck) in enumerate(zip(spec.experts, experts, strict=True)):
        wt = ck.read(name).to(device, torch.float32)
        _finite_or_fail(wt, f"tensor {name} of expert {path}")
        torch.sub(wt, w0, out=deltas[t])
        del wt
    role = tensor_role(name, tuple(w0.shape), method, spec.rest_policy)
    diag: dict = {"role": role, "expert_delta_norms": [float(d.norm()) for d in deltas]}
    if role == "method":
        task = TensorTask(name, deltas, None, factor_dtype)
        if grams is not None:
            task.grams = [g.gram_for(name) for g in grams]
            missing = [str(p) for p, g in zip(spec.stats, task.grams, strict=True) if g is None]
            if missing:
                raise MergeInputError(
                    f"statistics folder {missing[0]} has no input Gram for {name}"
                )
            task.grams = [g.to(device) for g in task.grams]
        merged = method.fn(task, params).to(torch.float32)
        if task.info:
            diag["method"] = task.info
        if not bool(torch.isfinite(merged).all()):
            raise FloatingPointError(
                f"method {method.name!r} produced non-finite values for tensor {name}"
            )
    elif role == "mean_delta":
        merged = deltas.mean(0)
    else:
        merged = torch.zeros_like(w0)
    del deltas
    diag["merged_delta_norm"] = float(merged.norm())
    full = w0 + merged
    diag.update(bf16_rounding(w0, merged, full))
    return full.to(out_dtype).cpu(), diag


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
    method, params, base, experts, grams, tok_src = _check_inputs(spec)
    device = resolve_device(spec.device)
    out_dtype = OUTPUT_DTYPES[spec.dtype]
    factor_dtype = FACTOR_DTYPES[spec.factor_dtype]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    out = Path(spec.output)
    with atomic_dir(out) as tmp:
        names = sorted(base.names())
        plan = []
        for n in names:
            info = base.tensors[n]
            plan.append((n, out_dtype if info.dtype.is_floating_point else info.dtype, info.shape))
        writer = ShardedWriter(tmp, plan, spec.max_shard_bytes)
        diagnostics, timings = {}, {}
        for name in tqdm(
            writer.order, desc=f"merge {method.name}", unit="tensor", disable=not progress
        ):
            t0 = time.perf_counter()
            tensor, diag = _merge_one(
                name, base, experts, spec, method, params, grams, device, factor_dtype, out_dtype
            )
            writer.write(name, tensor)
            del tensor
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[name] = round(time.perf_counter() - t0, 4)
            diagnostics[name] = diag
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
    log.info("wrote %s (%s, %.1f s)", out, method.name, record["timings"]["total_s"])
    return record
