"""A run config validated against `workflow/schemas/config.schema.yaml` (defaults filled in), then
checked for what a schema cannot say: methods and parameters, prompts, suites, files that must exist."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import jsonschema

from evals.registry import get_suite
from mergeeval.errors import InputError
from mergeeval.yamlio import check_loaded, load_yaml
from merges.adapter import is_adapter
from merges.registry import get_method

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
# the experts of the families made locally (make-tiny) or shipped (demofamily/models)
FAMILY_EXPERTS = ("math", "code", "if")

# the statistics recipes every config has (merges.<id>.stats names one; stats.recipes adds more)
STATS_RECIPES = {
    # the project's: each expert on its own task's prompts under its own template, padding masked
    "per_expert": {
        "model": "expert",
        "template_from": "expert",
        "generation_prompt": True,
        "padding": "masked",
        "pad_to": None,
        "select": "sampled",
        "column": "auto",
    },
    # the ACTMat authors' (their OLMo statistics script): the base on every task's prompts, all
    # under the Math (tokenizer_from) expert's template without a generation prompt, padded to 256
    # with the pads kept, the first prompts of the `prompt` column
    "authors": {
        "model": "base",
        "template_from": "tokenizer_from",
        "generation_prompt": False,
        "padding": "kept",
        "pad_to": 256,
        "select": "first",
        "column": "prompt",
    },
}


class ConfigError(InputError):
    """A config value that cannot run; the message starts with the config key."""

    def __init__(self, key: str, msg: str):
        super().__init__(f"config error at {key}: {msg}")


def _with_defaults(cls):
    """A validator that also writes each property's schema default into the instance."""
    validate_props = cls.VALIDATORS["properties"]

    def props(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": props})


def validate_schema(config: dict) -> dict:
    """A copy of `config` with defaults filled in; a ConfigError names the first bad key."""
    config = copy.deepcopy(config)
    schema = load_yaml(SCHEMA, "config schema")
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = next(iter(sorted(validator.iter_errors(config), key=lambda e: list(e.path))), None)
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        if "propertyNames" in error.schema_path:  # the name itself, quoted when it is odd
            plain = re.fullmatch(schema["$defs"]["name"]["pattern"], str(error.instance))
            key = f"{key}.{error.instance if plain else repr(error.instance)}"
        raise ConfigError(key, _schema_message(error, schema))
    return config


def _schema_message(error, schema: dict) -> str:
    """The schema's message, in words for a name (`$defs.name`) that cannot be a folder name."""
    name = schema["$defs"]["name"]
    if error.validator == "pattern" and error.validator_value == name["pattern"]:
        return (
            f"{error.instance!r} cannot name a folder: letters, digits, '_', '-' and '.' only, "
            "and not starting with '.' (never '.', '..' or a hidden name)"
        )
    if error.validator == "maxLength" and error.validator_value == name["maxLength"]:
        return f"a name of {len(error.instance)} characters; at most {name['maxLength']}"
    if error.validator == "not" and "propertyNames" in error.schema_path:
        return f"{error.instance!r} is a reserved name (base, zero_shot, expert)"
    return error.message


def check(config: dict) -> None:
    """Everything the schema cannot check, each failure one ConfigError naming the key."""
    models, experts = config["models"], list(config["models"]["experts"])
    _check_paths(models)
    if models["source"] == "hub":
        _check_hub(models)
    else:
        odd = [
            e for e in experts if e not in FAMILY_EXPERTS and not models["experts"][e].get("path")
        ]
        if odd:
            raise ConfigError(
                f"models.experts.{odd[0]}",
                f"the {models['source']} family has the experts {', '.join(FAMILY_EXPERTS)} only; "
                "other experts need models.source: hub",
            )
    if models["source"] == "demo":
        for name in [n for n in ["base", *experts] if not _entry(models, n).get("path")]:
            if not (ROOT / "demofamily/models" / name / "config.json").exists():
                raise ConfigError(
                    "models.source",
                    f"the demo family's demofamily/models/{name} is missing; it ships with the repository "
                    "(git checkout demofamily/models) and `python -m demofamily build` regenerates it",
                )
    for key in config["eval"]["env"]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
            raise ConfigError(f"eval.env.{key}", "not an environment variable name")
    clash = set(config["merges"]) & set(experts)
    if clash:
        raise ConfigError(f"merges.{min(clash)}", "a merge may not have an expert's name")
    tok = models.get("tokenizer_from", experts[0])
    if tok not in experts:
        raise ConfigError(
            "models.tokenizer_from", f"{tok!r} is not an expert ({', '.join(experts)})"
        )
    for name, recipe in config["stats"]["recipes"].items():
        src = recipe.get("template_from", "expert")
        if src not in ("expert", "tokenizer_from", *experts):
            raise ConfigError(
                f"stats.recipes.{name}.template_from",
                f"{src!r} is none of expert, tokenizer_from or an expert ({', '.join(experts)})",
            )
    main = main_experts(models)
    groups = {g for e in experts if (g := models["experts"][e].get("group"))}
    taken = set(config["merges"]) & {f"expert_{g}" for g in groups}
    if taken:
        raise ConfigError(f"merges.{min(taken)}", "a merge may not have a group's expert-row name")
    for mid, m in config["merges"].items():
        if not m.get("experts") and not main and "method" in m:
            raise ConfigError(
                f"merges.{mid}.experts",
                "every expert has a group, so a merge names its experts (default: the experts "
                "outside any group)",
            )
        chosen = m.get("experts") or main
        stray = [e for e in chosen if e not in experts]
        if stray:
            raise ConfigError(
                f"merges.{mid}.experts", f"{stray[0]!r} is not an expert ({', '.join(experts)})"
            )
        chosen = [e for e in experts if e in chosen]
        try:
            method = get_method(m["method"])
            method.parse_params(m.get("params", {}), chosen)
            method.check_expert_count(len(chosen))
        except InputError as e:
            raise ConfigError(f"merges.{mid}", str(e)) from None
        if method.needs_stats:
            _check_prompts(config, mid, m["method"], chosen)
            _check_recipe(config, mid, m.get("stats", "per_expert"))
        elif "stats" in m:
            raise ConfigError(f"merges.{mid}.stats", f"method {m['method']!r} uses no statistics")
        _check_output(models, mid, m, chosen)
    try:
        suite = get_suite(config["eval"]["suite"])
    except InputError as e:
        raise ConfigError("eval.suite", str(e)) from None
    val = _check_sweeps(config, suite)
    hub = {
        x: s.name
        for s in (suite, val)
        if s is not None and s.data == "hf"
        for x in s.benchmarks
        if "hf_dataset" in s.benchmark(x).source
    }
    for b in config["eval"]["revisions"]:
        if b not in hub:
            names = ", ".join(sorted({*hub.values()}) or [suite.name])
            raise ConfigError(
                f"eval.revisions.{b}",
                f"the run's suites ({names}) read no hub dataset for {b!r}; "
                f"benchmarks with one: {', '.join(hub) or 'none'}",
            )
    domains = {_domain(models, e) for e in experts}
    for b in suite.benchmarks:
        if suite.benchmark(b).domain not in domains:
            print(
                f"warning: no expert has domain {suite.benchmark(b).domain!r} of benchmark {b!r}; "
                "its cell of the expert row stays empty",
                file=sys.stderr,
            )
    compare = config["eval"].get("compare_template")
    if compare and compare == config["eval"]["template"]:
        raise ConfigError(
            "eval.compare_template",
            f"{compare!r} is already eval.template; name the other policy or drop the key",
        )
    for key in ("baseline", "baseline_fingerprints"):
        base = config["report"].get(key)
        if base and not Path(base).exists():
            raise ConfigError(f"report.{key}", f"{base} does not exist")
    band = config["report"]["noise_band"]
    if isinstance(band, str) and not Path(band).is_file():
        raise ConfigError(
            "report.noise_band", f"{band} is neither a number nor an existing CSV file"
        )


def _domain(models: dict, expert: str) -> str:
    return models["experts"][expert].get("domain", expert)


def _entry(models: dict, name: str) -> dict:
    return models["base"] if name == "base" else models["experts"][name]


def _check_paths(models: dict) -> None:
    """A model's local `path` exists, names no download as well, and is never an adapter base."""
    for name, m in [("base", models["base"]), *models["experts"].items()]:
        key = "models.base" if name == "base" else f"models.experts.{name}"
        if not m.get("path"):
            continue
        if m.get("repo_id") or m.get("revision"):
            raise ConfigError(key, "give a local path or repo_id and revision, not both")
        if not (Path(m["path"]) / "config.json").is_file() and not is_adapter(m["path"]):
            raise ConfigError(
                f"{key}.path",
                f"{m['path']} is neither a model folder (config.json) nor a PEFT adapter "
                "(adapter_config.json)",
            )
        if name == "base" and is_adapter(m["path"]):
            raise ConfigError(
                f"{key}.path", f"{m['path']} is a PEFT adapter; the base must be the full model"
            )
    if models["base"].get("adapter"):
        raise ConfigError("models.base.adapter", "the base must be a full model, not an adapter")


def _check_output(models: dict, mid: str, m: dict, chosen: list[str]) -> None:
    """An adapter output's rank: given, or the default that needs every expert to be an adapter."""
    sized = [k for k in ("adapter_rank", "adapter_energy") if k in m]
    if m.get("output", "model") != "adapter":
        if sized:
            raise ConfigError(f"merges.{mid}.{sized[0]}", "applies only with output: adapter")
        return
    if len(sized) > 1:
        raise ConfigError(f"merges.{mid}", "give adapter_rank or adapter_energy, not both")
    adapters = [
        e
        for e in chosen
        if models["experts"][e].get("adapter")
        or (models["experts"][e].get("path") and is_adapter(models["experts"][e]["path"]))
    ]
    if not sized and len(adapters) < len(chosen):
        raise ConfigError(
            f"merges.{mid}.output",
            "an adapter output of full-model experts needs adapter_rank or adapter_energy "
            "(the default, the sum of the experts' LoRA ranks, needs every expert to be an adapter)",
        )


def _check_hub(models: dict) -> None:
    seen = {}
    for name, m in [("base", models["base"]), *models["experts"].items()]:
        key = "models.base" if name == "base" else f"models.experts.{name}"
        if m.get("path"):
            continue
        for field in ("repo_id", "revision"):
            if not m.get(field):
                raise ConfigError(
                    f"{key}.{field}", "missing; a hub model needs repo_id and revision"
                )
        ident = (m["repo_id"], m["revision"])
        if name != "base" and ident in seen:
            raise ConfigError(
                key,
                f"the same model as models.experts.{seen[ident]} ({ident[0]}@{ident[1]}); "
                "each expert must be a different model",
            )
        if name != "base":
            seen[ident] = name


def _check_recipe(config: dict, mid: str, name: str) -> None:
    recipes = {**STATS_RECIPES, **config["stats"]["recipes"]}
    if name not in recipes:
        raise ConfigError(
            f"merges.{mid}.stats",
            f"unknown statistics recipe {name!r}; define it under stats.recipes "
            f"(known: {', '.join(recipes)})",
        )


def _check_prompts(config: dict, mid: str, method: str, experts: list[str]) -> None:
    prompts = config["stats"].get("prompts", {})
    for e in experts:
        p = prompts.get(e)
        if not p:
            raise ConfigError(
                f"stats.prompts.{e}",
                f"merge {mid!r} ({method}) needs calibration prompts for every expert",
            )
        if "file" in p and not Path(p["file"]).exists():
            raise ConfigError(f"stats.prompts.{e}.file", f"{p['file']} does not exist")
        if "file" not in p and not (p.get("hf_dataset") and p.get("revision")):
            raise ConfigError(f"stats.prompts.{e}", "give a file, or hf_dataset and revision")


def expand_mergekit_configs(config: dict) -> None:
    """Each `merges.ID.mergekit_config` becomes the merge it describes (method, experts, params,
    rest_policy `method`, dtype), its models named by the run's model names."""
    from merges.mergekit_config import read_yaml, translate

    names = ["base", *config["models"]["experts"]]
    for mid, m in config["merges"].items():
        if "mergekit_config" not in m:
            continue
        key = f"merges.{mid}.mergekit_config"

        def resolve(ref, where, key=key):
            if ref not in names:
                raise ConfigError(
                    key, f"{where} {ref!r} is none of this run's models ({', '.join(names)})"
                )
            return ref

        try:
            t = translate(read_yaml(Path(m["mergekit_config"])), m["mergekit_config"], resolve)
        except ConfigError:
            raise
        except InputError as e:
            raise ConfigError(key, str(e)) from None
        if t.base not in (None, "base") or "base" in t.experts:
            raise ConfigError(key, "the base is the run's base; list only experts as models")
        if len(set(t.experts)) != len(t.experts):
            raise ConfigError(key, "an expert is listed twice")
        per_expert = {  # lists in the file's model order, as mappings by expert name
            k: dict(zip(t.experts, v, strict=True))
            for k, v in t.params.items()
            if isinstance(v, list)
        }
        m.update(
            method=t.method,
            params=t.params | per_expert,
            experts=t.experts,
            rest_policy="method",
            dtype=t.dtype,
        )
        m.setdefault("recipe", f"mergekit config {m['mergekit_config']}")


def load(config: dict) -> dict:
    """The validated config with defaults, checked; raises ConfigError."""
    # before anything walks it: Snakemake's YAML loader keeps aliases as shared references
    check_loaded(config, "the run config", lambda msg: ConfigError("(top level)", msg))
    config = validate_schema(config)
    expand_mergekit_configs(config)
    expand_expert_groups(config)
    check(config)
    return config


def main_experts(models: dict) -> list[str]:
    """The experts outside any group: a merge's default experts and the expert row."""
    return [e for e, entry in models["experts"].items() if not entry.get("group")]


def expand_expert_groups(config: dict) -> None:
    """`merges.ID.experts: GROUP` (a group's name instead of a list) becomes the group's experts."""
    experts = config["models"]["experts"]
    for mid, m in config["merges"].items():
        group = m.get("experts")
        if isinstance(group, str):
            members = [e for e, entry in experts.items() if entry.get("group") == group]
            if not members:
                known = sorted({g for entry in experts.values() if (g := entry.get("group"))})
                raise ConfigError(
                    f"merges.{mid}.experts",
                    f"{group!r} is no expert group (groups: {', '.join(known) or 'none'}); "
                    "give a list of experts or a group of models.experts",
                )
            m["experts"] = members


def _check_sweeps(config: dict, suite):
    """Sweeps need a validation suite other than the test suite; `select` names its benchmark.
    Returns the validation suite (None without sweeps)."""
    sweeps = config.get("sweeps") or {}
    if not sweeps:
        return None
    name = config["eval"].get("validation_suite") or suite.validation
    if not name:
        raise ConfigError("sweeps", f"suite {suite.name!r} names no validation suite; set "
                          "eval.validation_suite to a suite whose items are not the test items")  # fmt: skip
    if name == suite.name:
        raise ConfigError("eval.validation_suite", "is the test suite itself; sweeps must select on "
                          "other items")  # fmt: skip
    try:
        val = get_suite(name)
    except InputError as e:
        raise ConfigError("eval.validation_suite", str(e)) from None
    for mid, sweep in sweeps.items():
        rule = sweep.get("select", "average")
        if rule != "average" and rule not in val.benchmarks:
            raise ConfigError(f"sweeps.{mid}.select", f"{rule!r} is neither 'average' nor a "
                              f"benchmark of {name!r}: {', '.join(val.benchmarks)}")  # fmt: skip
    return val
