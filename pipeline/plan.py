"""The jobs of one run, from its config: models, merges (as spec records), statistics, generation
and scoring requests, and the report's cells. Pure planning, so every decision can be tested
without Snakemake (the rule files only map these to rules); the one thing written is the run's
revision lock, by `lock_revisions`, which the Snakefile calls before any job runs."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from evals.registry import Suite, get_suite
from merges.adapter import is_adapter
from merges.hub import slug
from merges.registry import get_method
from pipeline.config import STATS_RECIPES, load, main_experts
from pipeline.guards import check_component, check_inside
from pipeline.plan_sweeps import SweepPlan
from pipeline.preflight import Download, check_writable, preflight
from pipeline.revisions import hub_inputs, lock_revisions, resolve_on_hub, unpinned
from pipeline.sweeps import expand


def argv(*pairs) -> str:
    """Command-line options with every value shell-quoted: argv(("--expert", path), ...); a pair
    (FLAG, True) is a bare switch and (FLAG, None or False) is left out."""
    return " ".join(
        flag if value is True else f"{flag} {shlex.quote(str(value))}"
        for flag, value in pairs
        if value is not None and value is not False
    )


@dataclass(frozen=True)
class Cell:
    row: str
    benchmark: str
    model: str


class Plan(SweepPlan):
    """Everything the DAG runs for one config (validated and checked on construction)."""

    def __init__(self, config: dict):
        self.config = load(config)
        self.run = self.config["run"]
        self.models = self.config["models"]
        self.merges = self.config["merges"]
        self.eval = self.config["eval"]
        self.stats = self.config["stats"]
        self.experts = list(self.models["experts"])
        self.compare = self.eval.get("compare_template")
        self.data_revisions: dict[str, str] = {}  # benchmark -> dataset commit (lock_revisions)
        # sweeps: each point is a merge of its own; a swept merge's row is its selected point
        self.points = expand(self.config)
        self.entries = dict(self.merges) | {
            p.id: self.merges[mid] | {"params": p.params}
            for mid, pts in self.points.items()
            for p in pts
        }
        self.check_paths()

    # -- hostile names and paths, unwritable outputs -----------------------------------------
    def name_key(self, name: str) -> str:
        """The config key that names a model folder, a generation target or a batch."""
        name = self.split_variant(name)[0]
        if name in self.merges:
            return f"merges.{name}"
        if name in self.experts:
            return f"models.experts.{name}"
        swept = next(
            (mid for mid, pts in self.points.items() if name in self.point_index[mid]), None
        )
        if swept:
            return f"sweeps.{swept}.grid"
        return "models.base" if name == "base" else "eval.models_per_job"  # base, batchN, valN

    @cached_property
    def point_index(self) -> dict[str, set[str]]:
        """{swept merge id: its points' ids}."""
        return {mid: {p.id for p in pts} for mid, pts in self.points.items()}

    def planned_names(self):
        """(name, key): every config-supplied name that becomes one path component."""
        yield self.run, "run"
        for name in [*self.experts, *self.merges, *self.point_ids, *self.all_batches]:
            yield name, self.name_key(name)
        for mid in self.merges:
            if self.merge_recipe(mid):
                yield self.merge_recipe(mid), f"merges.{mid}.stats"
        for name in ["base", *self.experts]:
            m = self.model_entry(name)
            if self.models["source"] == "hub" and not m.get("path"):
                yield slug(m["repo_id"]), f"{self.name_key(name)}.repo_id"
        for e, p in self.stats.get("prompts", {}).items():
            if "hf_dataset" in p and "file" not in p:
                yield slug(p["hf_dataset"]), f"stats.prompts.{e}.hf_dataset"
                yield p.get("split", "train"), f"stats.prompts.{e}.split"  # part of a file name

    def planned_paths(self):
        """(path, the root it must stay under, key): every output path the plan builds from the
        config's names and texts, and the hub download folders."""
        run = f"results/{self.run}"
        yield run, "results", "run"
        yield f"logs/{self.run}", "logs", "run"
        yield self.lock_file(), run, "run"
        for m in self.merge_jobs:
            files = (self.merge_dir(m), self.fingerprint_raw(m), self.fingerprint_file(m))
            yield from ((f, run, self.name_key(m)) for f in (*files, *self.merge_stats(m)))
        for mid in self.points:
            files = (self.sweep_file(mid), self.selection_file(mid), self.sweep_plot(mid))
            yield from ((f, run, f"sweeps.{mid}") for f in files)
            for p in self.points[mid]:
                yield self.val_samples_dir(p.id), run, f"sweeps.{mid}.grid"
        for batch in self.all_batches:
            for stage in ("generate", "score"):
                yield self.request_file(stage, batch), run, self.name_key(batch)
                yield self.batch_manifest(stage, batch), run, self.name_key(batch)
        for model in self.eval_models:
            yield self.samples_dir(model), run, self.name_key(model)
            for b in self.row_benchmarks(model):
                yield self.score_file(model, b), run, self.name_key(model)
        for name in ["base", *self.experts]:
            m = self.model_entry(name)
            if self.models["source"] == "hub" and not m.get("path"):
                root = f"resources/hub/{slug(m['repo_id'])}"
                yield self.model_dir(name), root, f"{self.name_key(name)}.revision"
        for e, p in self.stats.get("prompts", {}).items():
            if "hf_dataset" in p and "file" not in p:  # a download (a local file is an input)
                root = f"resources/calibration/{slug(p['hf_dataset'])}"
                yield f"{root}/{p['revision']}", root, f"stats.prompts.{e}.revision"
                for recipe in self.stats_recipes_used:
                    f = self.prompts_file(e, recipe)
                    yield f, f"{root}/{p['revision']}", f"stats.prompts.{e}.split"

    def check_paths(self) -> None:
        """Every name that becomes a path component is one plain folder name, and every planned
        path stays under its root (pipeline.guards): a ConfigError naming the key otherwise."""
        for name, key in self.planned_names():
            check_component(name, key)
        for path, root, key in self.planned_paths():
            check_inside(path, root, key)

    def check_outputs(self) -> None:
        """Before any job and before the revision lock: results/RUN and logs/RUN can be written
        (pipeline.preflight.check_writable), one error naming the folder otherwise."""
        check_writable(Path(f"results/{self.run}"), "the run's results")
        check_writable(Path(f"logs/{self.run}"), "the run's logs")

    # -- hub revisions -----------------------------------------------------------------------
    def lock_file(self) -> str:
        return f"results/{self.run}/revisions.lock.yaml"

    def lock_revisions(self, update: bool = False, resolve=None) -> dict[str, str]:
        """Resolve every hub input's branch or tag to a commit through the run's lock file
        (pipeline.revisions); from then on every path and request of the plan names the commit.
        A paper run warns for each input its config does not pin."""
        items = hub_inputs(self.config, self.suite, self.validation_suite if self.points else None)
        if self.run == "table1":
            for it in unpinned(items):
                print(f"warning: {it.key}: {it.repo}@{it.revision} is not pinned in the config; "
                      f"its commit is locked in {self.lock_file()}", file=sys.stderr)  # fmt: skip
        commits = lock_revisions(items, Path(self.lock_file()), update, resolve or resolve_on_hub)
        for key, commit in commits.items():
            section, _, name = key.partition(".")
            if key == "models.base":
                self.models["base"]["revision"] = commit
            elif section == "models":
                self.models["experts"][name.removeprefix("experts.")]["revision"] = commit
            elif section == "stats":
                self.stats["prompts"][name.removeprefix("prompts.")]["revision"] = commit
            else:
                self.data_revisions[name] = commit
        return commits

    def preflight(self) -> dict:
        """Before any job: the pending hub downloads exist at their commits and, with the merged
        models still to write, fit on the disk (pipeline.preflight)."""
        if self.models["source"] != "hub":
            return {}
        keys = {"base": "models.base"} | {e: f"models.experts.{e}" for e in self.experts}
        downloads = []
        for name, key in keys.items():
            m = self.model_entry(name)
            if not m.get("path") and not Path(self.model_dir(name)).exists():
                downloads.append(
                    Download(key, m["repo_id"], m["revision"], Path(self.model_dir(name)))
                )
        merged = [*self.merge_jobs, *self.points]  # every merge job and every selected copy
        pending = [m for m in merged if not Path(self.merge_dir(m)).exists()]
        return preflight(
            downloads, Path(self.model_dir("base")), len(pending), Path(f"results/{self.run}")
        )

    # -- models ------------------------------------------------------------------------------
    @cached_property
    def suite(self) -> Suite:
        return get_suite(self.eval["suite"])

    @property
    def benchmarks(self) -> list[str]:
        return list(self.suite.benchmarks)

    @property
    def tokenizer_from(self) -> str:
        return self.models.get("tokenizer_from", self.experts[0])

    def domain(self, expert: str) -> str:
        """The domain an expert is the specialist of (its name unless the config says)."""
        return self.models["experts"][expert].get("domain", expert)

    def model_entry(self, name: str) -> dict:
        return self.models["base"] if name == "base" else self.models["experts"][name]

    def model_dir(self, name: str) -> str:
        """Folder of the base or an expert (its `path` when the config gives one)."""
        if self.model_entry(name).get("path"):
            return self.model_entry(name)["path"]
        source = self.models["source"]
        if source == "tiny":
            return f"resources/tiny/{name}"
        if source == "demo":
            return f"demofamily/models/{name}"
        m = self.models["base"] if name == "base" else self.models["experts"][name]
        return f"resources/hub/{slug(m['repo_id'])}/{m['revision']}"

    @property
    def variants(self) -> list[str]:
        """Rows also scored under the other template policy: the models "NAME@POLICY"."""
        if not self.compare:
            return []
        main = [m for m in self.merges if self.merge_group(m) is None]
        return [f"{m}@{self.compare}" for m in ["base", *main]]

    @property
    def eval_models(self) -> list[str]:
        """Every model that is generated from and scored."""
        return ["base", *self.experts, *self.merges, *self.variants]

    def split_variant(self, model: str) -> tuple[str, str]:
        """(model name, template policy) of a generation target "NAME" or "NAME@POLICY"."""
        name, _, policy = model.partition("@")
        return name, policy or self.eval["template"]

    def eval_model_dir(self, model: str) -> str:
        name = self.split_variant(model)[0]
        return self.merge_dir(name) if name in self.merges else self.model_dir(name)

    def is_adapter(self, model: str) -> bool:
        """Whether a generation target is a PEFT LoRA adapter (served on the base as LoRA): an
        expert declared `adapter` or whose local folder is one, or a merge written as one."""
        name = self.split_variant(model)[0]
        if name in self.entries:
            return self.entries[name].get("output", "model") == "adapter"
        if name == "base":
            return False
        m = self.model_entry(name)
        return bool(m.get("adapter")) or bool(m.get("path") and is_adapter(m["path"]))

    def lora_options(self, model: str) -> dict:
        """A generation target's `lora_base` where it is an adapter (evals.generate.Target)."""
        return {"lora_base": self.model_dir("base")} if self.is_adapter(model) else {}

    # -- merges ------------------------------------------------------------------------------
    def merge_dir(self, merge_id: str) -> str:
        return f"results/{self.run}/models/{merge_id}"

    def method(self, merge_id: str):
        return get_method(self.entries[merge_id]["method"])

    def merge_recipe(self, merge_id: str) -> str | None:
        """The statistics recipe a merge reads (None: a data-free method)."""
        if not self.method(merge_id).needs_stats:
            return None
        return self.entries[merge_id].get("stats", "per_expert")

    def group(self, expert: str) -> str | None:
        """The expert's `group` (a block of the table of its own), None for the main experts."""
        return self.models["experts"][expert].get("group")

    @property
    def main_experts(self) -> list[str]:
        """The experts outside any group: the expert row, and a merge's default experts."""
        return main_experts(self.models)

    @property
    def groups(self) -> list[str]:
        """The expert groups, in the order of their first expert."""
        return list(dict.fromkeys(g for e in self.experts if (g := self.group(e)) is not None))

    def merge_experts(self, merge_id: str) -> list[str]:
        """The experts a merge combines: `merges.ID.experts` (in the run's expert order), else
        every expert outside a group."""
        chosen = self.entries[merge_id].get("experts")
        return [e for e in self.experts if e in chosen] if chosen else self.main_experts

    def merge_group(self, merge_id: str) -> str | None:
        """The block a merge's row is in: the group of its experts when they all share one."""
        groups = {self.group(e) for e in self.merge_experts(merge_id)}
        return groups.pop() if len(groups) == 1 else None

    def merge_stats(self, merge_id: str) -> list[str]:
        """Statistics folders a merge reads, one per expert in order (none for data-free methods)."""
        recipe = self.merge_recipe(merge_id)
        return [self.stats_dir(recipe, e) for e in self.merge_experts(merge_id)] if recipe else []

    def merge_setting(self, merge_id: str, key: str):
        return self.entries[merge_id].get(key, self.config["merge_defaults"][key])

    def merge_spec(self, merge_id: str) -> dict:
        """The spec file of one merge job (`python -m merges run --spec`): merge.json's inputs."""
        m = self.entries[merge_id]
        return {
            "method": m["method"],
            "base": self.model_dir("base"),
            "experts": [self.model_dir(e) for e in self.merge_experts(merge_id)],
            "expert_names": self.merge_experts(merge_id),
            "output": self.merge_dir(merge_id),
            "params": dict(m.get("params", {})),
            "stats": self.merge_stats(merge_id),
            "tokenizer_from": self.model_dir(self.tokenizer_from),
            "dtype": self.merge_setting(merge_id, "dtype"),
            "rest_policy": self.merge_setting(merge_id, "rest_policy"),
            "factor_dtype": self.merge_setting(merge_id, "factor_dtype"),
            "device": self.config["merge_defaults"]["device"],
            "generation_config_from": self.config["merge_defaults"]["generation_config_from"],
            "output_format": m.get("output", "model"),
            **{k: m[k] for k in ("adapter_rank", "adapter_energy") if k in m},
            "force": True,
            **({"recipe": m["recipe"]} if "recipe" in m else {}),
        }

    @property
    def merge_jobs(self) -> list[str]:
        """The merges that are merge jobs: every unswept merge and every sweep point."""
        unswept = [m for m in self.merges if m not in self.points]
        return unswept + self.point_ids

    # -- statistics --------------------------------------------------------------------------
    def stats_recipe(self, name: str) -> dict:
        """A statistics recipe: the built-in ones, or the config's (unset fields as per_expert)."""
        recipes = {**STATS_RECIPES, **self.stats["recipes"]}
        return {**STATS_RECIPES["per_expert"], **recipes[name]}

    @property
    def stats_recipes_used(self) -> list[str]:
        return list(dict.fromkeys(filter(None, map(self.merge_recipe, self.merges))))

    def stats_dir(self, recipe: str, expert: str) -> str:
        return f"results/{self.run}/stats/{recipe}/{expert}"

    def stats_model(self, recipe: str, expert: str) -> str:
        """The model run over the expert's prompts: the expert, or the base (authors' recipe)."""
        return self.model_dir("base" if self.stats_recipe(recipe)["model"] == "base" else expert)

    def stats_template(self, recipe: str, expert: str) -> str:
        """The folder whose chat template wraps the expert's prompts."""
        src = self.stats_recipe(recipe)["template_from"]
        if src == "expert":
            return self.model_dir(expert)
        return self.model_dir(self.tokenizer_from if src == "tokenizer_from" else src)

    def prompts_file(self, expert: str, recipe: str) -> str:
        p = self.stats["prompts"][expert]
        if "file" in p:
            return p["file"]
        r = self.stats_recipe(recipe)
        return (
            f"resources/calibration/{slug(p['hf_dataset'])}/{p['revision']}/"
            f"{p.get('split', 'train')}-{r['select']}-{r['column']}-n{p.get('n', 320)}.jsonl"
        )

    def stats_args(self, recipe: str, expert: str | None = None) -> str:
        s, r = self.stats, self.stats_recipe(recipe)
        adapter = expert is not None and r["model"] != "base" and self.is_adapter(expert)
        return argv(
            ("--lora-base", self.model_dir("base") if adapter else None),
            ("--max-tokens", r["pad_to"] or s["max_tokens"]),
            ("--pad-to", r["pad_to"]),
            ("--padding", r["padding"]),
            ("--generation-prompt" if r["generation_prompt"] else "--no-generation-prompt", True),
            ("--batch-size", s["batch_size"]),
            ("--device", s["device"]),
        )

    # -- generation and scoring --------------------------------------------------------------
    def row_benchmarks(self, model: str) -> list[str]:
        """Benchmarks a model is scored on: an expert only on its own domain, the rest on all."""
        name = self.split_variant(model)[0]
        if name in self.experts:
            return [
                b for b in self.benchmarks if self.suite.benchmark(b).domain == self.domain(name)
            ]
        return self.benchmarks

    def samples_dir(self, model: str) -> str:
        return f"results/{self.run}/samples/{model}"

    def domain_templates(self) -> dict[str, str]:
        """{domain: the folder of its expert's chat template}: the main experts', then a group's
        expert for a domain no main expert has."""
        ordered = [*self.main_experts, *(e for e in self.experts if self.group(e) is not None)]
        templates: dict[str, str] = {}
        for e in ordered:
            templates.setdefault(self.domain(e), self.model_dir(e))
        return templates

    def template_options(self, model: str) -> dict:
        """A generation target's template fields (evals.generate.Target)."""
        name, policy = self.split_variant(model)
        if policy == "per_task":
            return {"template": "per_task", "domain_templates": self.domain_templates()}
        if (
            name == "base"
        ):  # the base has no chat template; the paper used the tokenizer_from expert's
            return {"template": "paper", "template_from": self.model_dir(self.tokenizer_from)}
        return {"template": "paper"}

    def batch_template_dirs(self, batch: str) -> list[str]:
        """The folders whose chat templates a batch's targets read besides their own (a moved
        expert reruns only the batches that read it)."""
        dirs = []
        for m in self.batches.get(batch) or [self.points_merge(p) for p in self.val_batches[batch]]:
            opts = self.template_options(m)
            dirs += [opts["template_from"]] if "template_from" in opts else []
            dirs += opts.get("domain_templates", {}).values()
        return list(dict.fromkeys(dirs))

    def fingerprint_raw(self, merge_id: str) -> str:
        """The merge job's fingerprint of its result (`merges run --fingerprint`)."""
        return f"results/{self.run}/fingerprints/raw/{merge_id}.json"

    def fingerprint_file(self, merge_id: str) -> str:
        """The fingerprint beside its comparison with report.baseline_fingerprints."""
        return f"results/{self.run}/fingerprints/{merge_id}.json"

    def fingerprint_args(self) -> str:
        """`merges.fingerprint_check check` options: the baseline, tolerance and stop switch."""
        rep = self.config["report"]
        return argv(
            ("--baseline", rep["baseline_fingerprints"]),
            ("--tolerance", rep["fingerprint_tolerance"]),
            ("--strict", rep["stop_on_moved_merge"]),
        )

    def batch_fingerprints(self, batch: str) -> list[str]:
        """The fingerprint checks of the merges a generation batch holds: they run first."""
        if batch in self.val_batches:
            return [self.fingerprint_file(p) for p in self.val_batches[batch]]
        names = dict.fromkeys(self.split_variant(m)[0] for m in self.batches[batch])
        return [self.fingerprint_file(n) for n in names if n in self.merges]

    # -- generation and scoring jobs ---------------------------------------------------------
    @cached_property
    def batches(self) -> dict[str, list[str]]:
        """{job id: the eval models it generates and scores}: `eval.models_per_job` model folders
        (base, experts, merges in config order) per job, each with all its template policies.
        One folder per job: the job is named after it; else batch1, batch2, ..."""
        folders = ["base", *self.experts, *self.merges]
        per = self.eval["models_per_job"]
        chunks = [folders[i : i + per] for i in range(0, len(folders), per)]
        policies = {name: [name] for name in folders}
        for v in self.variants:
            policies[self.split_variant(v)[0]].append(v)
        ids = chunks if per == 1 else [f"batch{i}" for i in range(1, len(chunks) + 1)]
        return {
            (c[0] if per == 1 else i): [m for name in c for m in policies[name]]
            for i, c in zip(ids, chunks, strict=True)
        }

    def batch_of(self, model: str) -> str:
        return next(b for b, models in self.batches.items() if model in models)

    @property
    def all_batches(self) -> list[str]:
        """Every generation and scoring job: the test batches, then the validation batches."""
        return [*self.batches, *self.val_batches]

    def batch_model_dirs(self, batch: str) -> list[str]:
        if batch in self.val_batches:
            return [self.merge_dir(p) for p in self.val_batches[batch]]
        return list(dict.fromkeys(self.eval_model_dir(m) for m in self.batches[batch]))

    def request_file(self, stage: str, batch: str) -> str:
        return f"results/{self.run}/requests/{stage}/{batch}.json"

    def batch_manifest(self, stage: str, batch: str) -> str:
        """What a generate or score job did (its output for Snakemake; written last)."""
        return f"results/{self.run}/batches/{stage}/{batch}.json"

    def generate_request(self, batch: str) -> dict:
        """The `python -m evals generate --request` file of one job."""
        ev = self.eval
        common = {
            "seed": ev["seed"],
            "limit": ev["limit"],
            "max_tokens": ev["max_tokens"],
            "engine": dict(ev["engine"]),
        }
        if batch in self.val_batches:  # sweep points: the validation suite only
            suite = self.validation_suite
            return self.locked_data(suite) | {
                "suite": self.validation_suite_arg,
                **common,
                "targets": [
                    {
                        "model": self.merge_dir(p),
                        "output": self.val_samples_dir(p),
                        "benchmarks": list(suite.benchmarks),
                        **self.template_options(self.points_merge(p)),
                        **self.lora_options(p),
                    }
                    for p in self.val_batches[batch]
                ],
            }
        locked = self.locked_data(self.suite)
        if self.eval["evalplus_data"]:
            gens = {self.suite.benchmark(b).generation_name for b in self.evalplus_benchmarks()}
            locked["data"] = {g: self.evalplus_file() for g in sorted(gens)}
        return locked | {
            "suite": self.suite_arg,
            **common,
            "targets": [
                {
                    "model": self.eval_model_dir(m),
                    "output": self.samples_dir(m),
                    "benchmarks": self.row_benchmarks(m),
                    **self.template_options(m),
                    **self.lora_options(m),
                }
                for m in self.batches[batch]
            ],
        }

    def locked_data(self, suite: Suite) -> dict:
        """The locked dataset commits of a suite's benchmarks, as a request's `data_revisions`
        (a suite's requests name only its own, so a sweep added later leaves test requests as
        they were)."""
        revs = {b: c for b, c in self.data_revisions.items() if b in suite.benchmarks}
        return {"data_revisions": revs} if revs else {}

    def score_request(self, batch: str) -> dict:
        """The `python -m evals score --request` file of one job."""
        if batch in self.val_batches:
            suite = self.validation_suite
            return {
                "allow_unsandboxed": self.eval["allow_unsandboxed"],
                "scores": [
                    {
                        "benchmark": b,
                        "samples": f"{self.val_samples_dir(p)}/"
                        f"{suite.benchmark(b).generation_name}.jsonl.gz",
                        "output": self.val_score_file(p, b),
                    }
                    for p in self.val_batches[batch]
                    for b in suite.benchmarks
                ],
            }
        return {
            "allow_unsandboxed": self.eval["allow_unsandboxed"],
            "scores": [
                {
                    "benchmark": b,
                    "samples": self.samples_file(m, b),
                    "output": self.score_file(m, b),
                }
                for m in self.batches[batch]
                for b in self.row_benchmarks(m)
            ],
        }

    @property
    def suite_arg(self) -> str:
        return self.eval["suite"]

    def env_prefix(self) -> str:
        """`env K=V ...` for generation jobs (empty: `env` alone)."""
        return " ".join(shlex.quote(f"{k}={v}") for k, v in self.eval["env"].items())

    def samples_file(self, model: str, benchmark: str) -> str:
        gen = self.suite.benchmark(benchmark).generation_name
        return f"{self.samples_dir(model)}/{gen}.jsonl.gz"

    def score_file(self, model: str, benchmark: str) -> str:
        return f"results/{self.run}/scores/{model}/{benchmark}.json"

    # -- resources ---------------------------------------------------------------------------
    def resources(self, stage: str) -> dict:
        """Scheduler resources of a job of one stage: merge, stats or generate."""
        section = {"merge": "merge_defaults", "stats": "stats", "generate": "eval"}[stage]
        c = self.config[section]
        return {"gpu": c["gpus"], "mem_mb": c["mem_mb"], "runtime": c["runtime"]}

    def generate_runtime(self, batch: str) -> int:
        """Minutes for a generation job: eval.runtime per model folder it serves."""
        return self.eval["runtime"] * len(self.batch_model_dirs(batch))

    # -- report ------------------------------------------------------------------------------
    def report_cells(self) -> list[Cell]:
        """Every cell of the table: zero-shot, the expert row (each benchmark from the expert of
        its domain), each merge, and the same rows under the compared template policy."""
        cells = [Cell("zero_shot", b, "base") for b in self.benchmarks]
        for group in [None, *self.groups]:
            members = [e for e in self.experts if self.group(e) == group]
            for b in self.benchmarks:
                owners = [e for e in members if self.domain(e) == self.suite.benchmark(b).domain]
                if owners:
                    cells.append(Cell(self.expert_row(group), b, owners[0]))
        cells += [Cell(mid, b, mid) for mid in self.merges for b in self.benchmarks]
        for m in self.variants:  # the rows under the compared policy: "zero_shot@P", "MERGE@P"
            name, policy = m.split("@")
            row = f"zero_shot@{policy}" if name == "base" else m
            cells += [Cell(row, b, m) for b in self.benchmarks]
        return cells

    @staticmethod
    def expert_row(group: str | None) -> str:
        """The expert row of the main experts ("expert") or of a group ("expert_GROUP")."""
        return "expert" if group is None else f"expert_{group}"

    def block_rows(self) -> dict[str, str]:
        """{row: group} for the rows of a group's block (its expert row and its merges)."""
        rows = {self.expert_row(g): g for g in self.groups}
        return rows | {m: g for m in self.merges if (g := self.merge_group(m)) is not None}

    def block_title(self, group: str) -> str:
        """The heading of a group's block in the report."""
        members = [e for e in self.experts if self.group(e) == group]
        if all(self.is_adapter(e) for e in members):
            return f"Adapted experts (group `{group}`): PEFT LoRA adapters of the base, and their merges"
        return f"Expert group `{group}`: its experts and their merges"

    def evalplus_benchmarks(self) -> list[str]:
        """The suite's benchmarks read from an EvalPlus release (HumanEval, HumanEval+)."""
        return [b for b in self.benchmarks if "evalplus_release" in self.suite.benchmark(b).source]

    def evalplus_file(self) -> str:
        """Where `eval.evalplus_data` is fetched to (one release file serves both benchmarks)."""
        (b, *_) = self.evalplus_benchmarks() or [None]
        version = self.suite.benchmark(b).source["evalplus_release"] if b else "none"
        return f"resources/evalplus/HumanEvalPlus-{version}.jsonl.gz"

    def data_inputs(self) -> list[str]:
        """Data files a generation job reads that the DAG fetches first."""
        return (
            [self.evalplus_file()]
            if self.eval["evalplus_data"] and self.evalplus_benchmarks()
            else []
        )

    def fingerprints_file(self) -> str:
        """The run's collected merge fingerprints (a later run's report.baseline_fingerprints)."""
        return f"results/{self.run}/fingerprints.json"

    def report_prefix(self) -> str:
        return f"results/{self.run}/table1"

    def report_args(self) -> str:
        rep = self.config["report"]
        return argv(
            *[
                ("--cell", f"{c.row},{c.benchmark},{self.score_file(c.model, c.benchmark)}")
                for c in self.report_cells()
            ],
            ("--suite", self.suite_arg),
            ("--template", self.eval["template"]),
            ("--baseline", rep["baseline"]),
            ("--noise-band", rep["noise_band"]),
            ("--fingerprints", self.fingerprints_file() if self.merges else None),
            *[("--sweep", f"{mid}={self.selection_file(mid)}") for mid in self.points],
            *[
                ("--recipe", f"{mid}={m['recipe']}")
                for mid, m in self.merges.items()
                if "recipe" in m
            ],
            *[
                ("--paper-row", f"{mid}={m['paper_row']}")
                for mid, m in self.merges.items()
                if "paper_row" in m
            ],
            *[("--block", f"{row}={g}") for row, g in self.block_rows().items()],
            *[("--block-title", f"{g}={self.block_title(g)}") for g in self.groups],
        )
