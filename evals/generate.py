"""Generation with vLLM's offline engine: one engine serves every requested benchmark of a model,
and, in a batch (`generate_batch`), every model folder whose engine it can reuse (evals.engine).

Prompts are rendered with the chosen chat template (plus any assistant prefix) and passed as token
ids, so what is generated from is exactly what is stored. Each request has its own seed
(seed + crc32(benchmark/id)), so samples do not depend on batching. HumanEval+ reuses HumanEval's
generation. A benchmark is skipped on a rerun when its samples exist and its meta records the same
request key: a hash of the model's fingerprint (weights' names/sizes, merge.json, source.json,
config), the benchmark definition, template, sampling, seed, limit and data. `generation.json`
lists what the folder holds once every requested benchmark is done; a batch's manifest lists each
target's and is written last.

A target may be a PEFT LoRA adapter folder (evals.lora) on a base model folder: it is served as a
`LoRARequest` on an engine started for the base with LoRA enabled (evals.engine), its prompts are
rendered with the adapter's tokenizer files when it has them, else the base's, and its records
carry a `lora` entry (adapter, digest, base, rank, max_lora_rank).

Every folder served (a model, an adapter and its base) is checked to be whole first
(evals.folders): a truncated or corrupt folder is one error naming it, before any engine starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from evals.data import load_items
from evals.engine import EngineSession
from evals.errors import EvalInputError
from evals.folders import check_adapter_folder, check_model_folder
from evals.lora import Adapter, check_vocabulary, is_adapter, read_adapter
from evals.registry import get_suite
from evals.samples import meta_path, read_meta, write_samples
from evals.templates import folder_tokenizer, resolve_template
from mergeeval.chat import render_chat
from mergeeval.outputs import guard_output, write_text_atomic
from mergeeval.records import GENERATION_PACKAGES, MERGE_JSON, SOURCE_JSON, model_identity, versions

log = logging.getLogger("evals")


MANIFEST = "generation.json"


def model_fingerprint(model: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(model).glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    for name in (
        "config.json",
        MERGE_JSON,
        SOURCE_JSON,
        "chat_template.jinja",
        "tokenizer_config.json",
    ):
        f = Path(model) / name
        if f.exists():
            h.update(name.encode() + f.read_bytes())
    return h.hexdigest()


def request_key(
    fingerprint: str, bench, tmpl: dict, seed: int, limit, origin: str, engine: dict
) -> str:
    blob = json.dumps(
        [fingerprint, bench.model_dump(), tmpl["sha256"], seed, limit, origin, engine],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def capped(bench, max_tokens: int | None):
    """The benchmark with its sampling's max_tokens capped at `max_tokens` (None: as it is)."""
    if max_tokens is None or bench.sampling.max_tokens <= max_tokens:
        return bench
    sampling = bench.sampling.model_copy(update={"max_tokens": max_tokens})
    return bench.model_copy(update={"sampling": sampling})


def _earlier_meta(path: Path) -> dict:
    """An earlier run's meta, or {} when absent or malformed (its samples are then redone)."""
    try:
        return read_meta(path)
    except EvalInputError:
        log.warning("%s is malformed; its benchmark is generated again", path)
        return {}


def plan(suite_name: str, benchmarks: list[str] | None) -> dict:
    """{generation name: benchmark definition (suite overrides applied)}, in name order: one
    engine runs them one after another, and that order (which shapes the engine's batches and
    prefix cache, and so can flip a near-tie greedy token) does not depend on the suite's column
    order or the order of --benchmark."""
    suite = get_suite(suite_name)
    names = benchmarks or list(suite.benchmarks)
    groups = {}
    for name in names:
        bench = suite.benchmark(name)
        gen = bench.generation_name
        if gen not in groups:
            groups[gen] = suite.benchmark(gen) if gen in suite.benchmarks else bench
    return dict(sorted(groups.items()))


class Target(BaseModel):
    """One model folder under one template policy, generated into `output`. `model` may be a
    LoRA adapter folder, served on `lora_base` (default: the adapter's base_model_name_or_path
    when that is a local folder)."""

    model_config = ConfigDict(extra="forbid")
    model: Path
    output: Path
    benchmarks: list[str] | None = None
    template: str = "paper"
    domain_templates: dict[str, Path] = Field(default_factory=dict)
    template_from: Path | None = None
    lora_base: Path | None = None


class EngineArgs(BaseModel):
    """The vLLM engine arguments a request may set (those of `evals generate`'s flags)."""

    model_config = ConfigDict(extra="forbid")
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=1)
    dtype: str | None = None
    enforce_eager: bool | None = None


class Request(BaseModel):
    """A batch: every target generated by one job, sharing the suite, seed, limit and engine."""

    model_config = ConfigDict(extra="forbid")
    suite: str
    seed: int = 0
    limit: int | None = Field(default=None, ge=1)
    # a cap on every benchmark's max_tokens (a short run of a paper suite); recorded in its sampling
    max_tokens: int | None = Field(default=None, ge=1)
    engine: EngineArgs = Field(default_factory=EngineArgs)
    targets: list[Target] = Field(min_length=1)
    # benchmark -> the dataset commit the run's revision lock names (hub data only)
    data_revisions: dict[str, str] = Field(default_factory=dict)
    # benchmark -> a data file to read instead of the suite's source (e.g. a fetched release)
    data: dict[str, Path] = Field(default_factory=dict)


def generate(
    model: Path,
    suite_name: str,
    output: Path,
    benchmarks: list[str] | None = None,
    template: str = "paper",
    domain_templates: dict[str, Path] | None = None,
    limit: int | None = None,
    data: dict[str, Path] | None = None,
    seed: int = 0,
    engine_args: dict | None = None,
    template_from: Path | None = None,
    max_tokens: int | None = None,
    lora_base: Path | None = None,
) -> list[Path]:
    """Write `output/<benchmark>.jsonl.gz` (+ `.meta.json`) for each generation; return the paths.

    `template_from`: with the `paper` policy, read the template from this folder instead of the
    model's (the zero-shot base has none; the paper used the Math expert's). `lora_base`: the base
    model folder of an adapter `model`.
    """
    target = Target(
        model=model,
        output=output,
        benchmarks=benchmarks,
        template=template,
        domain_templates=domain_templates or {},
        template_from=template_from,
        lora_base=lora_base,
    )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise EvalInputError(f"--limit must be a positive integer, got {limit!r}")
    return run_targets([target], suite_name, limit, data, seed, engine_args, None, max_tokens)[0][
        "paths"
    ]


def generate_batch(request: Path, manifest: Path) -> dict:
    """Run a batch request (JSON, `Request`'s fields) and write its manifest: per target its
    folder, which generations were made or reused, and how the engine got the weights."""
    try:
        req = Request.model_validate_json(Path(request).read_text())
    except (OSError, ValueError) as e:
        raise EvalInputError(f"generation request {request}: {e}") from e
    engine = req.engine.model_dump(exclude_none=True)
    done = run_targets(
        req.targets,
        req.suite,
        req.limit,
        req.data,
        req.seed,
        engine,
        req.data_revisions,
        req.max_tokens,
    )
    record = {
        "request": str(Path(request).resolve()),
        "targets": [{k: v for k, v in d.items() if k != "paths"} for d in done],
    }
    write_text_atomic(Path(manifest), json.dumps(record, indent=2, default=str) + "\n")
    return record


def run_targets(
    targets: list[Target],
    suite_name: str,
    limit: int | None,
    data: dict[str, Path] | None,
    seed: int,
    engine_args: dict | None,
    revisions: dict[str, str] | None = None,
    max_tokens: int | None = None,
) -> list[dict]:
    """Check and render every target first (bad input fails before any engine starts), then
    generate what is not already complete, one engine session for all, in the given order except
    that the targets of one LoRA engine run together (`EngineSession.order`); the result lists
    them in the given order.
    `revisions`: benchmark -> the dataset commit to read hub data at; `max_tokens`: a cap on
    every benchmark's own."""
    suite = get_suite(suite_name)
    args = {"dtype": "auto", "max_model_len": suite.max_model_len, "seed": seed}
    args.update(engine_args or {})
    generated = {gen for t in targets for gen in plan(suite.name, t.benchmarks)}
    unknown = sorted(set(data or {}) - generated)
    if unknown:
        raise EvalInputError(
            f"--data {unknown[0]}=...: {unknown[0]!r} is not a benchmark generated here; "
            f"valid: {', '.join(sorted(generated))}"
        )
    adapters = [
        read_adapter(t.model, t.lora_base) if t.lora_base or is_adapter(t.model) else None
        for t in targets
    ]
    # not closed at the end: the process exits
    session = EngineSession(args, [a for a in adapters if a is not None])
    prepared = [
        _prepare(
            t,
            a,
            suite,
            limit,
            dict(data or {}),
            seed,
            session.args_for(t.model, a),
            revisions or {},
            max_tokens,
        )
        for t, a in zip(targets, adapters, strict=True)
    ]
    rendered = [
        _render(_prompt_folder(t, a), p[0], args, seed) if p[0] else []
        for t, a, p in zip(targets, adapters, prepared, strict=True)
    ]
    done = [None] * len(targets)
    for i in session.order(targets, adapters):
        t, a, (todo, manifest, paths, data_t), jobs = (
            targets[i],
            adapters[i],
            prepared[i],
            rendered[i],
        )
        engine = None
        if todo:
            Path(t.output).mkdir(parents=True, exist_ok=True)
            llm, engine, lora = session.llm_for(t.model, a)
            served = (t.model, session.args_for(t.model, a), lora)
            _generate(llm, served, suite, jobs, seed, limit, data_t, engine)
        _write_manifest(t, a, suite, manifest)
        done[i] = {
            "model": str(t.model),
            "output": str(t.output),
            "template": t.template,
            "generated": [gen for gen, *_ in todo],
            "reused": sorted(set(manifest) - {gen for gen, *_ in todo}),
            "engine": engine,
            "paths": paths,
        }
    return done


def _prompt_folder(t: Target, adapter: Adapter | None) -> Path:
    """The folder whose tokenizer renders the target's prompts (evals.lora.Adapter.prompt_folder)."""
    return adapter.prompt_folder if adapter else Path(t.model)


def _prepare(
    t: Target,
    adapter: Adapter | None,
    suite,
    limit,
    data: dict,
    seed: int,
    args: dict,
    revisions: dict,
    max_tokens=None,
):
    """(pending generations, manifest entries, sample paths, data files) of one target; `args`:
    the engine arguments it is served with (part of its request key)."""
    model, output = Path(t.model), Path(t.output)
    if adapter is None and not (model / "config.json").exists():
        raise EvalInputError(f"model folder {model} has no config.json")
    groups = plan(suite.name, t.benchmarks)
    data = {gen: p for gen, p in data.items() if gen in groups}
    # the output folder holds samples: it may exist (a resumed run) but never overlap an input
    guard_output(
        output,
        [("model", model), ("LoRA base", adapter and adapter.base)]
        + [("template source", t.template_from)]
        + [(f"{d} template source", p) for d, p in t.domain_templates.items()]
        + [(f"{b} data file", p) for b, p in data.items()],
        force=True,
    )
    # a folder cut short (an existing output to Snakemake) is named here, not by vLLM's loader
    if adapter is None:
        check_model_folder(model)
    else:
        check_adapter_folder(adapter.path)
        check_model_folder(adapter.base)
    prompt_folder = _prompt_folder(t, adapter)
    if adapter is None:
        fingerprint = model_fingerprint(model)
    else:
        # the adapter's config and weights, its own tokenizer files if any, and its base
        parts = (adapter.sha256, model_fingerprint(model), model_fingerprint(adapter.base))
        fingerprint = hashlib.sha256(f"lora:{':'.join(parts)}".encode()).hexdigest()
        if adapter.own_tokenizer:
            check_vocabulary(
                adapter, folder_tokenizer(adapter.path), folder_tokenizer(adapter.base)
            )
    todo, paths, manifest = [], [], {}
    for gen, bench in groups.items():
        bench = capped(bench, max_tokens)
        path = output / f"{gen}.jsonl.gz"
        paths.append(path)
        data_file = data.get(gen) or suite.fixture_file(bench)
        if data_file is not None:
            data[gen] = data_file
        items, origin = load_items(bench, data_file, suite.data, revisions.get(bench.name))
        items = items[:limit] if limit else items
        text, tmpl = resolve_template(
            t.template, prompt_folder, bench.domain, t.domain_templates, t.template_from
        )
        key = request_key(fingerprint, bench, tmpl, seed, limit, origin, args)
        manifest[gen] = {"samples": path.name, "meta": meta_path(path).name, "request_key": key}
        old = _earlier_meta(meta_path(path))
        if path.exists() and old.get("request_key") == key:
            log.info("%s: samples complete, skipped", path)
            continue
        todo.append((gen, bench, items, origin, text, tmpl, path, key))
    return todo, manifest, paths, data


def _identity(model: Path, adapter: Adapter | None) -> dict:
    """The model's identity; an adapter's adds its record (evals.lora.Adapter.record)."""
    ident = model_identity(model)
    return ident | {"lora": adapter.record()} if adapter else ident


def _write_manifest(t: Target, adapter: Adapter | None, suite, manifest: dict) -> None:
    """generation.json; left untouched when its content would not change (a resumed batch)."""
    path = Path(t.output) / MANIFEST
    record = {
        "model": _identity(t.model, adapter),
        "suite": suite.name,
        "template": t.template,
        "generations": manifest,
    }
    text = json.dumps(record, indent=2) + "\n"
    if not (path.exists() and path.read_text() == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)


def _render(model: Path, todo: list, args: dict, seed: int) -> list:
    """Every pending benchmark's prompts (token ids) and sampling parameters."""
    from vllm import SamplingParams

    tokenizer = folder_tokenizer(model)
    jobs = []
    for gen, bench, items, origin, text, tmpl, path, key in todo:
        rendered, params = [], []
        s = bench.sampling
        for it in items:
            messages = [{"role": "user", "content": bench.prompt.user.format(**it.fields)}]
            prompt = render_chat(
                tokenizer,
                messages,
                text,
                assistant_prefix=bench.prompt.assistant_prefix.format(**it.fields),
            )
            ids = tokenizer(prompt, add_special_tokens=False).input_ids
            room = args["max_model_len"] - len(ids)
            if room < 1:
                raise EvalInputError(
                    f"{gen} item {it.id}: prompt of {len(ids)} tokens leaves no room in max_model_len "
                    f"{args['max_model_len']}; raise --max-model-len"
                )
            rendered.append((prompt, ids))
            params.append(
                SamplingParams(
                    n=s.n,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    max_tokens=min(s.max_tokens, room),
                    stop=s.stop or None,
                    seed=seed + zlib.crc32(f"{gen}/{it.id}".encode()),
                )
            )
        jobs.append((gen, bench, items, origin, tmpl, path, rendered, params, key))
    return jobs


def _generate(llm, served: tuple, suite, jobs: list, seed, limit, data, engine: dict) -> None:
    """Generate and write every rendered benchmark's samples and meta. `served`: (model folder,
    the engine's arguments, the LoRA request or None)."""
    model, args, lora = served
    for gen, bench, items, origin, tmpl, path, rendered, params, key in jobs:
        t1 = time.perf_counter()
        s = bench.sampling
        prompts = [{"prompt_token_ids": ids} for _, ids in rendered]
        outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        rows = []
        for it, (prompt, ids), out in zip(items, rendered, outputs, strict=True):
            rows.append(
                {
                    "id": it.id,
                    "prompt": prompt,
                    "completions": [o.text for o in out.outputs],
                    "finish_reasons": [o.finish_reason for o in out.outputs],
                    "n_prompt_tokens": len(ids),
                    "n_completion_tokens": [len(o.token_ids) for o in out.outputs],
                }
            )
        write_samples(path, rows)
        meta = {
            "benchmark": gen,
            "request_key": key,
            "suite": suite.name,
            "model": model_identity(model) | ({"lora": engine["lora"]} if lora else {}),
            "template": tmpl,
            "sampling": s.model_dump() | {"seed": seed, "max_model_len": args["max_model_len"]},
            "engine_args": {k: v for k, v in args.items()},
            "data": origin,
            "data_source": suite.data,
            "data_file": str(Path(data[gen]).resolve()) if gen in data else None,
            "limit": limit,
            "n_items": len(rows),
            "timings": {
                "weights": engine["weights"],
                "engine_s": engine["seconds"],
                "generate_s": round(time.perf_counter() - t1, 1),
            },
            "versions": versions(*GENERATION_PACKAGES),
        }
        write_text_atomic(meta_path(path), json.dumps(meta, indent=2) + "\n")
        log.info("wrote %s (%d items)", path, len(rows))
