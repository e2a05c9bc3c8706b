"""Command line: `python -m merges {list,run,stats,download,download-prompts,verify,diff,
fingerprint*,make-tiny,bench-*}`.

`make-tiny` and `bench*` are entries into the tooling package `devtools`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mergeeval.cli import key_values, non_negative_float, non_negative_int, positive_int
from merges.device import DEVICES
from merges.errors import MergeInputError
from merges.fingerprint_check import TOLERANCE as FINGERPRINT_TOLERANCE
from merges.fingerprint_check import add_check_options
from merges.grams import PADDING_MODES
from merges.hub import PROMPT_COLUMNS, SELECTIONS
from merges.policy import REST_POLICIES
from merges.spec import (
    FACTOR_DTYPES,
    GENERATION_CONFIG_SOURCES,
    OUTPUT_DTYPES,
    OUTPUT_FORMATS,
    MergeSpec,
    load_spec_file,
    spec_from_fields,
)


def cmd_list(args) -> int:
    from merges.registry import methods

    for name, m in methods().items():
        stats = "  [needs --stats]" if m.needs_stats else ""
        print(f"{name}{stats}\n    {m.summary}")
        for key, p in m.describe_params().items():
            print(f"    --param {key}=...  {p['type']}, default {p['default']!r}  {p['help']}")
    return 0


# `run` flags that define the merge: with --spec the file holds them all, so none may be given.
RUN_DEFAULTS = {
    "method": None,
    "base": None,
    "expert": None,
    "output": None,
    "param": [],
    "stats": [],
    "device": "auto",
    "dtype": "bfloat16",
    "tokenizer_from": None,
    "rest_policy": "mean_delta",
    "factor_dtype": "float64",
    "generation_config_from": "base",
    "force": False,
    "allow_duplicate_experts": False,
    "recipe": None,
    "expert_name": None,
    "output_format": "model",
    "adapter_rank": None,
    "adapter_energy": None,
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def run_spec(args) -> MergeSpec:
    """The MergeSpec of `merges run`: from --spec FILE, or from the flags (as before --spec)."""
    given = [d for d in RUN_DEFAULTS if getattr(args, d) is not None]
    if args.mergekit_config:
        from merges.mergekit_config import read_mergekit_config

        extra = [d for d in given if d not in ("output", "device", "force")]
        extra += ["spec"] if args.spec else []
        if extra or args.output is None:
            raise MergeInputError(
                f"--mergekit-config {args.mergekit_config} takes only --output (required) and "
                f"--device, --force{'; drop ' + ', '.join(map(_flag, extra)) if extra else ''}"
            )
        spec = read_mergekit_config(
            Path(args.mergekit_config), Path(args.output), args.device or "auto"
        )
        spec.force = bool(args.force)
        return spec
    if args.spec:
        if given:
            raise MergeInputError(
                f"--spec {args.spec} sets every merge input; drop {', '.join(map(_flag, given))} "
                "(or put it in the spec file)"
            )
        return load_spec_file(Path(args.spec))
    missing = [_flag(d) for d in ("method", "base", "expert", "output") if d not in given]
    if missing:
        raise MergeInputError(
            f"run needs {', '.join(missing)} (or --spec FILE with the merge's fields)"
        )
    a = {d: RUN_DEFAULTS[d] if getattr(args, d) is None else getattr(args, d) for d in RUN_DEFAULTS}
    rename = {"expert": "experts", "param": "params", "expert_name": "expert_names"}
    fields = {rename.get(d, d): a[d] for d in a}
    names = a["expert_name"] or [Path(e).name for e in a["expert"]]
    fields["params"] = expert_params(key_values(a["param"], "--param"), names)
    return spec_from_fields(fields)


def expert_params(flat: dict[str, str], experts: list[str]) -> dict:
    """`--param KEY=V` for every expert, `--param EXPERT:KEY=V` for one: per-expert keys become a
    mapping by expert name (a plain KEY=V fills the experts not named)."""
    out: dict = {k: v for k, v in flat.items() if ":" not in k}
    for k, v in flat.items():
        if ":" not in k:
            continue
        expert, _, key = k.rpartition(":")
        if expert not in experts:
            raise MergeInputError(
                f"--param {k}={v}: {expert!r} is not an expert's name ({', '.join(experts)}); "
                "--expert-name NAME (once per --expert) sets the names"
            )
        per = out.get(key)
        if not isinstance(per, dict):
            per = {e: per for e in experts} if per is not None else {}
            out[key] = per
        per[expert] = v
    return out


def cmd_run(args) -> int:
    from merges.engine import run_merge

    spec = run_spec(args)
    record = run_merge(spec, progress=not args.quiet)
    if args.fingerprint:
        from mergeeval.outputs import write_text_atomic
        from merges.fingerprint import fingerprint

        fp = fingerprint(Path(spec.output), Path(spec.base))
        fp = {"model": str(spec.output), "fingerprint": fp}
        write_text_atomic(Path(args.fingerprint), json.dumps(fp, indent=1) + "\n")
    s = record["summary"]
    print(
        f"merged {s['tensors']} tensors ({s['method_tensors']} by {record['method']}) into {spec.output} "
        f"in {record['timings']['total_s']:.1f} s; max bf16 lost fraction {s['max_bf16_lost_frac']:.3f}"
    )
    return 0


def cmd_stats(args) -> int:
    from merges.stats import collect_grams

    meta = collect_grams(
        model=Path(args.model),
        prompts=Path(args.prompts),
        output=Path(args.output),
        max_tokens=args.max_tokens,
        chat_template_from=Path(args.chat_template_from) if args.chat_template_from else None,
        max_prompts=args.max_prompts,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        generation_prompt=args.generation_prompt,
        padding=args.padding,
        pad_to=args.pad_to,
        lora_base=Path(args.lora_base) if args.lora_base else None,
    )
    print(json.dumps({k: meta[k] for k in ("n_sequences", "n_tokens", "n_grams")}))
    return 0


def cmd_make_tiny(args) -> int:
    from devtools.tiny_family import make_tiny_family

    paths = make_tiny_family(Path(args.output), seed=args.seed, force=args.force)
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_bench(args) -> int:
    from devtools.model_bench import bench

    record = bench(
        Path(args.workdir),
        args.layers,
        tuple(args.methods.split()),
        args.device,
        args.mergekit,
        args.threads,
        Path(args.json) if args.json else Path(args.workdir) / "bench.json",
    )
    return 0 if all(r["ok"] for r in record["rows"]) else 1


def cmd_bench_layers(args) -> int:
    from devtools.layer_bench import bench_layers

    return bench_layers(Path(args.workdir), args.layers, args.methods.split(), args.device)


def cmd_download(args) -> int:
    from merges.hub import download_model

    print(json.dumps(download_model(args.repo_id, args.revision, Path(args.output))))
    return 0


def cmd_download_prompts(args) -> int:
    from merges.hub import download_prompts

    n = download_prompts(
        args.dataset,
        args.revision,
        Path(args.output),
        args.n,
        args.split,
        args.seed,
        select=args.select,
        column=args.column,
    )
    print(f"wrote {n} prompts to {args.output}")
    return 0


def cmd_verify(args) -> int:
    from merges.engine import check_compatible

    base, experts = check_compatible(Path(args.base), [Path(e) for e in args.expert])
    report = {
        "base": args.base,
        "experts": args.expert,
        "tensors": len(base.names()),
        "parameters": sum(math.prod(base.shape(n)) for n in base.names()),
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.output:
        from mergeeval.outputs import guard_output, write_text_atomic

        inputs = [("base", Path(args.base))] + [("expert", Path(e)) for e in args.expert]
        write_text_atomic(guard_output(Path(args.output), inputs, kind="file"), text)
    print(text, end="")
    return 0


def cmd_diff(args) -> int:
    from merges.diff import diff_folders, markdown, report_json

    out = None
    if args.json:
        from mergeeval.outputs import guard_output

        inputs = [("A", Path(args.a)), ("B", Path(args.b))]
        inputs += [("--base", Path(args.base))] if args.base else []
        out = guard_output(Path(args.json), inputs, kind="file", flag="--json")
    report = diff_folders(
        Path(args.a),
        Path(args.b),
        Path(args.base) if args.base else None,
        max_rel=args.max_rel,
        max_ulps=args.max_ulps,
    )
    if out is not None:
        from mergeeval.outputs import write_text_atomic

        write_text_atomic(out, report_json(report))
    print(markdown(report), end="")
    return 1 if report["summary"]["over_tolerance"] else 0


def cmd_fingerprint(args) -> int:
    from mergeeval.outputs import guard_output, write_text_atomic
    from merges.fingerprint import fingerprint
    from merges.fingerprint_check import check, describe

    inputs = [("model", Path(args.model)), ("--base", args.base and Path(args.base))]
    out = guard_output(Path(args.output), inputs, kind="file")
    fp = fingerprint(Path(args.model), Path(args.base) if args.base else None)
    record = check(fp, args.id, Path(args.baseline) if args.baseline else None, args.tolerance)
    write_text_atomic(out, json.dumps(record, indent=1) + "\n")
    print(describe(args.id, record), flush=True)
    moved = (record["comparison"] or {}).get("status") == "moved"
    return 1 if moved and args.strict else 0


def cmd_fingerprint_compare(args) -> int:
    from merges.fingerprint_check import compare_collections, markdown

    results = compare_collections(Path(args.new), Path(args.baseline), args.tolerance)
    print(markdown(results), end="")
    return 1 if any(r["status"] in ("moved", "incomparable") for r in results.values()) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m merges", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="methods, their parameters and defaults").set_defaults(fn=cmd_list)

    r = sub.add_parser(
        "run",
        help="merge experts into a base, streaming tensor by tensor",
        description="Give the merge as flags (--method, --base, --expert, --output, ...) or as "
        "--spec FILE (YAML/JSON with the same fields as merge.json's inputs), not both.",
    )
    r.add_argument(
        "--spec",
        metavar="FILE",
        help="YAML or JSON file with the merge's fields (method, base, experts, output, params, "
        "stats, device, dtype, tokenizer_from, rest_policy, factor_dtype, generation_config_from, "
        "force, allow_duplicate_experts, recipe, expert_names, output_format, adapter_rank, "
        "adapter_energy); relative paths are relative to "
        "the current directory; replaces every flag below except --quiet",
    )
    r.add_argument(
        "--mergekit-config",
        metavar="FILE.yml",
        help="a mergekit YAML config (models, base_model, merge_method, parameters, dtype); "
        "with --output (and --device, --force) only",
    )
    r.add_argument("--method", help="merge method (see `list`); required without --spec")
    r.add_argument("--base", help="base model folder (safetensors); required without --spec")
    r.add_argument(
        "--expert",
        action="append",
        help="expert folder; repeat per expert; required without --spec",
    )
    r.add_argument(
        "--output", help="output folder (must not exist unless --force); required without --spec"
    )
    r.add_argument(
        "--param",
        action="append",
        metavar="[EXPERT:]KEY=VALUE",
        help="a method parameter; EXPERT:KEY=VALUE sets a per-expert one for one expert",
    )
    r.add_argument(
        "--expert-name",
        action="append",
        metavar="NAME",
        help="the experts' names for EXPERT:KEY parameters, once per --expert (default: folder names)",
    )
    r.add_argument(
        "--stats",
        action="append",
        metavar="DIR",
        help="Gram folder, once per expert in order",
    )
    r.add_argument("--device", choices=DEVICES, help="default auto")
    r.add_argument("--dtype", choices=list(OUTPUT_DTYPES), help="output dtype (default bfloat16)")
    r.add_argument(
        "--tokenizer-from",
        help="folder whose tokenizer/chat template is copied (default: first expert)",
    )
    r.add_argument("--rest-policy", choices=REST_POLICIES, help="default mean_delta")
    r.add_argument(
        "--factor-dtype",
        choices=list(FACTOR_DTYPES),
        help="dtype of SVD/eigh/solves (default float64); the authors' fp32 pinv is a method "
        "parameter (solver=fp32_pinv), not this",
    )
    r.add_argument(
        "--recipe",
        help="recorded in merge.json: 'authors' when this is a paper's recipe, else the deviation",
    )
    r.add_argument(
        "--generation-config-from",
        choices=GENERATION_CONFIG_SOURCES,
        help="where the merged folder's generation_config.json comes from: base (default, as the "
        "ACTMat authors' merges), tokenizer (the --tokenizer-from folder, else the base) or none",
    )
    r.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="replace an existing output folder (only one this project wrote: it has merge.json)",
    )
    r.add_argument(
        "--allow-duplicate-experts",
        action="store_true",
        default=None,
        help="accept the same expert folder twice (it then counts twice)",
    )
    r.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        help="model (default): a full model folder; adapter: a PEFT LoRA adapter of the base, "
        "each merged block weight factored by a truncated SVD",
    )
    r.add_argument(
        "--adapter-rank",
        type=positive_int,
        metavar="R",
        help="adapter output: the rank kept per module (default: the sum of the adapter "
        "experts' ranks, exact for linear merges of LoRA experts)",
    )
    r.add_argument(
        "--adapter-energy",
        type=float,
        metavar="E",
        help="adapter output: instead of a rank, keep per module the fewest singular directions "
        "holding the share E in (0, 1] of ‖Δ*‖²_F",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--fingerprint",
        metavar="FILE",
        help="also write the merge's fingerprint (per tensor: delta norm, projections, hash)",
    )
    r.set_defaults(fn=cmd_run)

    s = sub.add_parser("stats", help="RegMean input Grams of a model over prompts")
    s.add_argument("--model", required=True, help="a model folder, or a PEFT LoRA adapter folder")
    s.add_argument(
        "--lora-base", metavar="DIR", help="with an adapter as --model: the base model it adapts"
    )
    s.add_argument(
        "--prompts", required=True, help="JSONL with a 'prompt' string or 'messages' list per line"
    )
    s.add_argument("--output", required=True)
    s.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="truncate each sequence to this many tokens (default 512; with --pad-to N: N)",
    )
    s.add_argument(
        "--chat-template-from",
        help="folder whose tokenizer chat template wraps the prompts (default: --model's); "
        "--model is the model that is run",
    )
    s.add_argument(
        "--generation-prompt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="render with apply_chat_template(add_generation_prompt=...) (default on; the "
        "ACTMat authors: off)",
    )
    s.add_argument(
        "--padding",
        choices=PADDING_MODES,
        default="masked",
        help="masked (default): padding positions are left out of the Grams; kept: they count "
        "exactly as real tokens (the ACTMat authors' recipe)",
    )
    s.add_argument(
        "--pad-to",
        type=positive_int,
        default=None,
        metavar="N",
        help="pad and truncate every sequence to exactly N tokens (the authors: 256); default: pad "
        "to the longest in each batch. With --padding kept, N sets how many pad positions enter "
        "the Grams (without --pad-to, kept padding depends on --batch-size)",
    )
    s.add_argument("--max-prompts", type=positive_int, default=None)
    s.add_argument("--batch-size", type=positive_int, default=8)
    s.add_argument("--device", default="auto", choices=DEVICES)
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_stats)

    t = sub.add_parser(
        "make-tiny", help="write a tiny OLMo-3 base and three experts (offline tests and demo)"
    )
    t.add_argument("--output", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true")
    t.set_defaults(fn=cmd_make_tiny)

    d = sub.add_parser("download", help="download a model folder from the hub at a pinned revision")
    d.add_argument("--repo-id", required=True)
    d.add_argument(
        "--revision", required=True, help="commit hash (or branch/tag; the commit is recorded)"
    )
    d.add_argument("--output", required=True)
    d.set_defaults(fn=cmd_download)

    dp = sub.add_parser(
        "download-prompts",
        help="calibration prompts from a hub dataset as JSONL (+ FILE.meta.json)",
    )
    dp.add_argument("--dataset", required=True)
    dp.add_argument("--revision", required=True)
    dp.add_argument("--output", required=True)
    dp.add_argument("--n", type=positive_int, default=320)
    dp.add_argument("--split", default="train")
    dp.add_argument("--seed", type=int, default=0, help="seed of --select sampled")
    dp.add_argument(
        "--select",
        choices=SELECTIONS,
        default="sampled",
        help="sampled (default): a seeded sample of N rows, in dataset order; first: the first N "
        "rows (the ACTMat authors' recipe)",
    )
    dp.add_argument(
        "--column",
        choices=PROMPT_COLUMNS,
        default="auto",
        help="auto (default): the dataset's 'messages' column, else 'prompt'; the authors used "
        "'prompt' (one user message)",
    )
    dp.set_defaults(fn=cmd_download_prompts)

    v = sub.add_parser("verify", help="check that experts have the base's tensor names and shapes")
    v.add_argument("--base", required=True)
    v.add_argument("--expert", action="append", required=True)
    v.add_argument("--output", help="write the report here")
    v.set_defaults(fn=cmd_verify)

    df = sub.add_parser(
        "diff",
        help="compare two model folders tensor by tensor (exit 1 when over the tolerance)",
        description="Per tensor: max |A-B|, ||A-B||_F / ||B||_F (with --base: / ||B-base||_F), "
        "share of entries changed, max distance in bf16 ulps. Exit 0: nothing over the "
        "tolerance; 1: something is; 2: bad input. A tensor must meet every tolerance given; "
        "with none given, any change fails (as --max-rel 0).",
    )
    df.add_argument("a", metavar="A", help="model folder (safetensors)")
    df.add_argument("b", metavar="B", help="model folder with A's tensor names and shapes")
    df.add_argument(
        "--base", metavar="DIR", help="compare task vectors A-base and B-base (relative to B-base)"
    )
    df.add_argument(
        "--max-rel",
        type=non_negative_float,
        metavar="X",
        help="largest relative Frobenius difference allowed per tensor",
    )
    df.add_argument(
        "--max-ulps",
        type=non_negative_int,
        metavar="N",
        help="largest distance in bf16 ulps allowed per entry",
    )
    df.add_argument("--json", metavar="FILE", help="write every tensor's figures and a summary")
    df.set_defaults(fn=cmd_diff)

    fp = sub.add_parser(
        "fingerprint",
        help="fingerprint a merged folder (per tensor: delta norm, projections, hash); "
        "compare with a baseline",
    )
    fp.add_argument("model", help="merged model folder")
    fp.add_argument("--base", help="the base model: fingerprints describe the merged delta")
    add_check_options(fp)
    fp.set_defaults(fn=cmd_fingerprint)

    fx = sub.add_parser(
        "fingerprint-compare",
        help="compare a run's collected fingerprints with a baseline (exit 1 when a merge moved)",
    )
    fx.add_argument("new", help="this run's fingerprints.json")
    fx.add_argument("baseline", help="the committed fingerprints.json")
    fx.add_argument("--tolerance", type=non_negative_float, default=FINGERPRINT_TOLERANCE)
    fx.set_defaults(fn=cmd_fingerprint_compare)

    b = sub.add_parser(
        "bench",
        help="merge full-width OLMo-3-7B-shaped checkpoints beside the I/O floor and mergekit",
    )
    b.add_argument("--workdir", default="results/bench")
    b.add_argument("--layers", type=positive_int, default=2, help="transformer blocks")
    b.add_argument("--methods", default="average task_arithmetic ties dare")
    b.add_argument("--device", default="cpu", choices=[d for d in DEVICES if d != "auto"])
    b.add_argument(
        "--mergekit",
        default="auto",
        choices=["auto", "on", "off"],
        help="mergekit rows (every method mergekit also has): auto = when mergekit-yaml is installed",
    )
    b.add_argument("--threads", type=positive_int, help="torch/OMP threads (default: all CPUs)")
    b.add_argument("--json", help="write the record here (default WORKDIR/bench.json)")
    b.set_defaults(fn=cmd_bench)

    bl = sub.add_parser(
        "bench-layers", help="per-layer merge times on OLMo-3-7B-shaped layers (GPU timings)"
    )
    bl.add_argument("--workdir", default="results/bench-layers")
    bl.add_argument("--layers", type=int, default=1)
    bl.add_argument(
        "--methods",
        default="task_arithmetic iso_c actmat tsv",
        help="space-separated METHOD[:factor_dtype][:key=value,...]",
    )
    bl.add_argument("--device", default="auto", choices=DEVICES)
    bl.set_defaults(fn=cmd_bench_layers)
    return p


def main(argv: list[str] | None = None) -> int:
    from mergeeval.cli import run

    return run(build_parser(), argv)
