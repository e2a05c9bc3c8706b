"""Config validation (at DAG-build time, before any job) and the path/input functions of every rule."""

import re
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(
    0, str(Path(workflow.basedir))
)  # the project's packages, also without an install

from evals.errors import EvalInputError  # noqa: E402
from evals.registry import get_suite  # noqa: E402
from merges.deps import code_files, code_record  # noqa: E402
from merges.errors import MergeInputError  # noqa: E402
from merges.hub import slug  # noqa: E402
from merges.registry import get_method  # noqa: E402

validate(config, "../schemas/config.schema.yaml")

RUN = config["run"]
MODELS = config["models"]
EXPERTS = list(MODELS["experts"])
MERGES = config["merges"]
EVAL = config["eval"]
MD = config["merge_defaults"]
# rows also scored under the other template policy are the models "NAME@POLICY"
COMPARE = EVAL.get("compare_template")


def flags(*pairs):
    """Command-line options with every value shell-quoted: flags(("--expert", path), ...);
    a pair (FLAG, True) is a bare switch."""
    return " ".join(
        flag if value is True else f"{flag} {shlex.quote(str(value))}"
        for flag, value in pairs
    )


def config_error(key, msg):
    raise ValueError(f"config error at {key}: {msg}")


def check_config():
    if MODELS["source"] == "hub":
        for name, m in [("base", MODELS["base"]), *MODELS["experts"].items()]:
            key = "models.base" if name == "base" else f"models.experts.{name}"
            for field in ("repo_id", "revision"):
                if not m.get(field):
                    config_error(
                        f"{key}.{field}",
                        "missing; a hub model needs repo_id and revision",
                    )
            if not re.fullmatch(r"[0-9a-f]{40}", m["revision"]):
                print(
                    f"warning: {key}.revision {m['revision']!r} is not a commit hash; the resolved commit is recorded in source.json",
                    file=sys.stderr,
                )
    if MODELS["source"] == "demo":
        for name in ["base", *EXPERTS]:
            if not Path("demofamily/models", name, "config.json").exists():
                config_error(
                    "models.source",
                    f"the demo family's demofamily/models/{name} is missing; it ships with the repository "
                    "(git checkout demofamily/models) and `python -m demofamily build` regenerates it",
                )
    if MODELS["source"] == "hub":
        seen = {}
        for name, m in MODELS["experts"].items():
            ident = (m.get("repo_id"), m.get("revision"))
            if ident in seen:
                config_error(
                    f"models.experts.{name}",
                    f"the same model as models.experts.{seen[ident]} ({ident[0]}@{ident[1]}); "
                    "each expert must be a different model",
                )
            seen[ident] = name
    for key in EVAL["env"]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            config_error(f"eval.env.{key}", "not an environment variable name")
    tok = MODELS.get("tokenizer_from", EXPERTS[0])
    if tok not in EXPERTS:
        config_error(
            "models.tokenizer_from", f"{tok!r} is not an expert ({', '.join(EXPERTS)})"
        )
    for mid, m in MERGES.items():
        try:
            method = get_method(m["method"])
            method.parse_params(m.get("params", {}))
        except MergeInputError as e:
            config_error(f"merges.{mid}", str(e))
        if method.needs_stats:
            prompts = config["stats"].get("prompts", {})
            for e in EXPERTS:
                p = prompts.get(e)
                if not p:
                    config_error(
                        f"stats.prompts.{e}",
                        f"merge {mid!r} ({m['method']}) needs calibration prompts for every expert",
                    )
                if "file" in p and not Path(p["file"]).exists():
                    config_error(
                        f"stats.prompts.{e}.file", f"{p['file']} does not exist"
                    )
                if "file" not in p and not (p.get("hf_dataset") and p.get("revision")):
                    config_error(
                        f"stats.prompts.{e}", "give a file, or hf_dataset and revision"
                    )
    try:
        suite = get_suite(EVAL["suite"])
    except EvalInputError as e:
        config_error("eval.suite", str(e))
    missing = {"humaneval", "humanevalplus", "aime24", "aime25", "ifeval"} - set(
        suite.benchmarks
    )
    if missing:
        config_error(
            "eval.suite",
            f"suite {suite.name!r} lacks {sorted(missing)}, which the Table 1 report needs",
        )
    if COMPARE and COMPARE == EVAL["template"]:
        config_error(
            "eval.compare_template",
            f"{COMPARE!r} is already eval.template; name the other policy or drop the key",
        )
    base = config["report"].get("baseline")
    if base and not Path(base).exists():
        config_error("report.baseline", f"{base} does not exist")
    band = config["report"]["noise_band"]
    if isinstance(band, str) and not Path(band).is_file():
        config_error(
            "report.noise_band", f"{band} is neither a number nor an existing CSV file"
        )


check_config()
if (
    shutil.which("python")
    and Path(shutil.which("python")).resolve() != Path(sys.executable).resolve()
):
    print(
        f"warning: jobs run `python` = {shutil.which('python')}, not this Snakemake's {sys.executable}; "
        "activate the project's environment (source .venv/bin/activate)",
        file=sys.stderr,
    )
SUITE = get_suite(EVAL["suite"])
BENCHMARKS = list(SUITE.benchmarks)


VARIANTS = [f"{m}@{COMPARE}" for m in ["base", *MERGES]] if COMPARE else []


wildcard_constraints:
    run=re.escape(RUN),
    model="|".join(map(re.escape, ["base", *EXPERTS, *MERGES, *VARIANTS])),
    merge_id="|".join(map(re.escape, MERGES)),
    expert="|".join(map(re.escape, EXPERTS)),
    benchmark="|".join(map(re.escape, BENCHMARKS)),


def model_dir(name):
    """Folder of the base or an expert."""
    if MODELS["source"] == "tiny":
        return f"resources/tiny/{name}"
    if MODELS["source"] == "demo":
        return f"demofamily/models/{name}"
    m = MODELS["base"] if name == "base" else MODELS["experts"][name]
    return f"resources/hub/{slug(m['repo_id'])}/{m['revision']}"


def split_variant(model):
    """(model name, template policy) of a generation target "NAME" or "NAME@POLICY"."""
    name, _, policy = model.partition("@")
    return name, policy or EVAL["template"]


def eval_model_dir(model):
    name = split_variant(model)[0]
    return f"results/{RUN}/models/{name}" if name in MERGES else model_dir(name)


def benchmark_domain(benchmark):
    return SUITE.benchmark(benchmark).domain


def row_benchmarks(model):
    """Benchmarks a model is scored on: an expert only on its own domain, the rest on all."""
    name = split_variant(model)[0]
    if name in EXPERTS:
        return [b for b in BENCHMARKS if benchmark_domain(b) == name]
    return BENCHMARKS


def generation_of(benchmark):
    return SUITE.benchmark(benchmark).generation_name


def score_file(model, benchmark):
    return f"results/{RUN}/scores/{model}/{benchmark}.json"


def report_cells():
    """(row, benchmark, model) for every cell of the table."""
    cells = [("zero_shot", b, "base") for b in BENCHMARKS]
    for b in BENCHMARKS:
        owners = [e for e in EXPERTS if benchmark_domain(b) == e]
        if owners:
            cells.append(("expert", b, owners[0]))
    cells += [(mid, b, mid) for mid in MERGES for b in BENCHMARKS]
    if COMPARE:
        cells += [(f"zero_shot@{COMPARE}", b, f"base@{COMPARE}") for b in BENCHMARKS]
        cells += [
            (f"{m}@{COMPARE}", b, f"{m}@{COMPARE}") for m in MERGES for b in BENCHMARKS
        ]
    return cells


def report_outputs():
    return multiext(f"results/{RUN}/table1", ".md", ".csv", ".json", ".png")


def prompts_file(expert):
    p = config["stats"]["prompts"][expert]
    if "file" in p:
        return p["file"]
    return f"resources/calibration/{slug(p['hf_dataset'])}/{p['revision']}/{p.get('split', 'train')}-n{p.get('n', 320)}.jsonl"


def merge_setting(merge_id, key):
    return MERGES[merge_id].get(key, MD[key])


def method_module(merge_id):
    return get_method(MERGES[merge_id]["method"]).fn.__module__


def merge_code(w):
    """Every project file the merge's result depends on (merges.deps): inputs, so editing or
    touching one reruns exactly the merges that use it."""
    base = Path(workflow.basedir).resolve()
    return [str(p.relative_to(base)) for p in code_files(method_module(w.merge_id))]


def merge_stats(w):
    needs = get_method(MERGES[w.merge_id]["method"]).needs_stats
    return [f"results/{RUN}/stats/{e}" for e in EXPERTS] if needs else []


def template_options(w):
    name, policy = split_variant(w.model)
    if policy == "per_task":
        return flags(
            ("--template", "per_task"),
            *[("--domain-template", f"{e}={model_dir(e)}") for e in EXPERTS],
        )
    if (
        name == "base"
    ):  # the base has no chat template; the paper used the tokenizer_from expert's
        tok = MODELS.get("tokenizer_from", EXPERTS[0])
        return flags(("--template", "paper"), ("--template-from", model_dir(tok)))
    return flags(("--template", "paper"))


def engine_options():
    return flags(
        *[
            (f"--{k.replace('_', '-')}", v)
            for k, v in EVAL["engine"].items()
            if v is not False
        ]
    )
