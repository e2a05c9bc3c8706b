"""Planning without Snakemake: which jobs a config asks for, with which options (pipeline.plan)."""

import shlex
from pathlib import Path

import pytest
import yaml

from evals.report import read_table, write_report
from pipeline.config import ConfigError
from pipeline.plan import Plan

ROOT = Path(__file__).resolve().parents[1]


def cfg(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths are relative to the repository, as under Snakemake


def test_demo_plan_rows_templates_and_resources():
    plan = Plan(cfg("demo"))
    merges = list(cfg("demo")["merges"])
    main = [m for m in merges if not m.startswith("lora_")]  # the adapted-experts block: lora_*
    adapters = ["math_lora", "code_lora", "if_lora"]
    assert plan.eval_models == [
        "base", "math", "code", "if", *adapters, *merges, "base@paper", *(f"{m}@paper" for m in main)
    ]  # fmt: skip
    cells = plan.report_cells()
    rows = list(dict.fromkeys(c.row for c in cells))
    assert rows == [
        "zero_shot",
        "expert",
        "expert_lora",
        *merges,
        "zero_shot@paper",
        *(f"{m}@paper" for m in main),
    ]
    expert = {c.benchmark: c.model for c in cells if c.row == "expert"}
    assert expert == {
        "humaneval": "code", "humanevalplus": "code", "aime24": "math", "aime25": "math", "ifeval": "if"
    }  # fmt: skip
    adapted = {c.benchmark: c.model for c in cells if c.row == "expert_lora"}
    assert adapted == {b: f"{e}_lora" for b, e in expert.items()}
    assert plan.block_rows() == {"expert_lora": "lora"} | {
        m: "lora" for m in merges if m not in main
    }
    assert plan.merge_experts("ties") == [
        "math",
        "code",
        "if",
    ]  # a merge's default: the main experts
    assert plan.merge_experts("lora_ties") == adapters  # `experts: lora`, the group's
    assert plan.is_adapter("math_lora") and plan.is_adapter("lora_ta_adapter")
    assert not plan.is_adapter("lora_ties")
    assert plan.row_benchmarks("code") == ["humaneval", "humanevalplus"]
    assert plan.row_benchmarks("ties@paper") == plan.benchmarks
    # per_task (the demo's policy): every expert's folder by domain; @paper: the stored template,
    # and for the base (which has none) the tokenizer_from expert's
    assert plan.template_options("ties") == {
        "template": "per_task",
        "domain_templates": {
            "math": "demofamily/models/math",
            "code": "demofamily/models/code",
            "if": "demofamily/models/if",
        },
    }
    assert plan.template_options("ties@paper") == {"template": "paper"}
    assert plan.template_options("base@paper") == {
        "template": "paper", "template_from": "demofamily/models/math"
    }  # fmt: skip
    assert plan.eval_model_dir("ties@paper") == "results/demo/models/ties"
    assert plan.eval_model_dir("if") == "demofamily/models/if"
    assert plan.resources("merge") == {"gpu": 0, "mem_mb": 2000, "runtime": 10}
    assert plan.resources("generate") == {"gpu": 0, "mem_mb": 6000, "runtime": 30}
    assert plan.resources("stats") == {"gpu": 0, "mem_mb": 4000, "runtime": 10}


def test_demo_batches_cover_every_model_once_with_its_policies_together():
    plan = Plan(cfg("demo"))
    per = cfg("demo")["eval"]["models_per_job"]
    batches = plan.batches
    assert list(batches) == [f"batch{i}" for i in range(1, len(batches) + 1)]
    flat = [m for models in batches.values() for m in models]
    assert sorted(flat) == sorted(plan.eval_models)  # every model, once
    for b, models in batches.items():
        assert len(plan.batch_model_dirs(b)) <= per
        # a folder's template policies share its job (and its loaded weights)
        for m in models:
            assert plan.split_variant(m)[0] in models
    assert plan.batch_of("ties") == plan.batch_of("ties@paper")
    # the score requests write exactly the report's cells
    written = {s["output"] for b in batches for s in plan.score_request(b)["scores"]}
    assert written == {plan.score_file(c.model, c.benchmark) for c in plan.report_cells()}
    targets = [t for b in batches for t in plan.generate_request(b)["targets"]]
    assert [t["output"] for t in targets] == [plan.samples_dir(m) for m in flat]
    assert plan.score_request("batch1")["allow_unsandboxed"] is False
    # every merge of a batch is fingerprint-checked before the batch generates; base and experts
    # are not merges
    checked = [f for b in batches for f in plan.batch_fingerprints(b)]
    assert sorted(checked) == sorted(plan.fingerprint_file(m) for m in plan.merges)
    assert plan.fingerprint_file("ties") == "results/demo/fingerprints/ties.json"


def test_fingerprint_options_follow_the_report_keys(tmp_path):
    c = cfg("demo")
    baseline = tmp_path / "fingerprints.json"
    baseline.write_text("{}")
    c["report"] = {"baseline_fingerprints": str(baseline), "fingerprint_tolerance": 0.05,
                   "stop_on_moved_merge": True}  # fmt: skip
    assert shlex.split(Plan(c).fingerprint_args()) == [
        "--baseline", str(baseline), "--tolerance", "0.05", "--strict"
    ]  # fmt: skip
    c["report"] = {}
    assert Plan(c).fingerprint_args() == ""
    c["report"] = {"baseline_fingerprints": str(tmp_path / "missing.json")}
    with pytest.raises(ConfigError, match="report.baseline_fingerprints"):
        Plan(c)


def test_table1_plan_hub_paths_specs_and_generation_options():
    plan = Plan(cfg("table1"))
    assert plan.model_dir("if") == (
        "resources/hub/allenai--Olmo-3-7B-RL-Zero-IF/3cae007c5324a9a06ee6780f03b848bc7b8fd440"
    )
    assert plan.variants == [] and len(plan.eval_models) == 1 + 3 + 12
    assert len(plan.report_cells()) == 5 + 5 + 12 * 5
    spec = plan.merge_spec("regmean")
    assert spec["method"] == "regmean" and spec["output"] == "results/table1/models/regmean"
    assert spec["experts"] == [plan.model_dir(e) for e in ("math", "code", "if")]
    assert spec["tokenizer_from"] == plan.model_dir("math")
    assert plan.merge_spec("ties")["stats"] == []
    assert plan.merge_spec("task_arithmetic")["params"] == {"scale": 0.4}
    # one generation job per model folder, named after it
    assert list(plan.batches) == ["base", "math", "code", "if", *cfg("table1")["merges"]]
    req = plan.generate_request("base")
    assert req["suite"] == "table1" and req["limit"] is None
    assert req["engine"] == {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.85}
    (target,) = req["targets"]
    assert target == {
        "model": plan.model_dir("base"),
        "output": "results/table1/samples/base",
        "benchmarks": plan.benchmarks,
        "template": "paper",
        "template_from": plan.model_dir("math"),
    }
    assert [s["benchmark"] for s in plan.score_request("math")["scores"]] == ["aime24", "aime25"]
    assert plan.generate_runtime("ties") == 720
    assert plan.resources("merge") == {"gpu": 1, "mem_mb": 32000, "runtime": 240}


def test_table1_rows_follow_the_authors_recipes_and_variants_have_their_own_statistics():
    plan = Plan(cfg("table1"))
    # the authors' RegMean: the base model run on every expert's prompts, the Math template without
    # a generation prompt, padded to 256 with the pads kept, the first 320 of the `prompt` column
    assert plan.merge_spec("regmean")["params"] == {"alpha": 1.0, "solver": "fp32_pinv"}
    assert plan.merge_spec("actmat")["params"] == {"solver": "fp32_pinv"}
    assert plan.merge_spec("actmat_fp64")["params"] == {}
    authors = plan.merge_stats("regmean")
    assert authors == [f"results/table1/stats/authors/{e}" for e in ("math", "code", "if")]
    assert plan.merge_stats("regmean_masked") == [
        f"results/table1/stats/per_expert/{e}" for e in ("math", "code", "if")
    ]
    assert plan.stats_recipes_used == ["authors", "per_expert"]
    assert plan.stats_model("authors", "code") == plan.model_dir("base")
    assert plan.stats_template("authors", "code") == plan.model_dir("math")
    assert plan.stats_model("per_expert", "code") == plan.model_dir("code")
    assert plan.stats_template("per_expert", "code") == plan.model_dir("code")
    assert shlex.split(plan.stats_args("authors")) == [
        "--max-tokens", "256", "--pad-to", "256", "--padding", "kept", "--no-generation-prompt",
        "--batch-size", "8", "--device", "auto",
    ]  # fmt: skip
    assert shlex.split(plan.stats_args("per_expert"))[:5] == [
        "--max-tokens", "256", "--padding", "masked", "--generation-prompt"
    ]  # fmt: skip
    assert plan.prompts_file("if", "authors") == (
        "resources/calibration/allenai--Dolci-RL-Zero-IF-7B/"
        "c96e4e424c0a5d416f725c488ec7c61b7f758d85/train-first-prompt-n320.jsonl"
    )
    assert plan.prompts_file("if", "per_expert").endswith("/train-sampled-auto-n320.jsonl")
    # the report says which rows are the authors' and what the variants change
    args = shlex.split(plan.report_args())
    assert "regmean=authors" in args and "actmat_fp64=actmat" in args
    assert any(a.startswith("regmean_masked=each expert") for a in args)


def test_an_expert_names_its_domain():
    c = cfg("table1")
    c["models"]["experts"] = {
        "olmo_math": {**c["models"]["experts"]["math"], "domain": "math"},
        "olmo_code": {**c["models"]["experts"]["code"], "domain": "code"},
        "olmo_if": {**c["models"]["experts"]["if"], "domain": "if"},
    }
    c["models"]["tokenizer_from"] = "olmo_math"
    c["stats"]["prompts"] = {f"olmo_{k}": v for k, v in c["stats"]["prompts"].items()}
    plan = Plan(c)
    assert plan.row_benchmarks("olmo_math") == ["aime24", "aime25"]
    expert = {x.benchmark: x.model for x in plan.report_cells() if x.row == "expert"}
    assert expert["ifeval"] == "olmo_if" and expert["humaneval"] == "olmo_code"
    c["eval"]["template"] = "per_task"
    assert Plan(c).template_options("ties")["domain_templates"]["math"].startswith("resources/hub/")


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda c: c["models"]["experts"].update(chem={}), "models.experts.chem"),
        (lambda c: c["merges"].update(math={"method": "average"}), "merges.math"),
        (lambda c: c["merges"]["ties"].update(method="magic"), "merges.ties"),
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["eval"].update(limit=0), "eval.limit"),
        (lambda c: c["merges"]["regmean"].update(stats="mine"), "merges.regmean.stats"),
        (lambda c: c["merges"]["ties"].update(stats="authors"), "merges.ties.stats"),
        (lambda c: c["merges"]["ties"].update(params={"density": {"maths": 0.2}}), "merges.ties"),
        (lambda c: c["merges"].update(s={"method": "slerp"}), "merges.s"),
        (lambda c: c["merges"]["ties"].update(experts=["chem"]), "merges.ties.experts"),
        (
            lambda c: c["merges"]["ties"].update(mergekit_config="config/mergekit/ties.yml"),
            "merges.ties",
        ),
        (
            lambda c: c["merges"].update(m={"mergekit_config": "config/nothing.yml"}),
            "merges.m.mergekit_config",
        ),
        (
            lambda c: c["stats"].setdefault("recipes", {}).update(x={"template_from": "chem"}),
            "stats.recipes.x.template_from",
        ),
    ],
)
def test_bad_configs_name_the_key(edit, key):
    c = cfg("demo")
    edit(c)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Plan(c)


def test_a_new_benchmark_is_one_yaml_and_a_suite_line(tmp_path, monkeypatch):
    """As a new user adds one: a benchmark YAML in an existing format and a suite line; it is
    planned for every row and appears as a column of the report."""
    import evals.registry as reg

    bench = yaml.safe_load((ROOT / "evals/benchmarks/aime25.yaml").read_text())
    bench.update(name="aime_easy", description="AIME-format items, a second set")
    monkeypatch.setattr(
        reg, "benchmarks", lambda: {**reg._load(ROOT / "evals/benchmarks", "benchmark", reg.Benchmark),
                                    "aime_easy": reg.Benchmark.model_validate(bench)}
    )  # fmt: skip
    suite = yaml.safe_load((ROOT / "evals/suites/demo.yaml").read_text())
    suite["benchmarks"]["aime_easy"] = {"sampling": {"max_tokens": 40}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    c = cfg("demo")
    c["eval"]["suite"] = str(tmp_path / "suite.yaml")
    plan = Plan(c)
    assert plan.benchmarks[-1] == "aime_easy" and "aime_easy" in plan.row_benchmarks("math")
    assert "aime_easy" not in plan.row_benchmarks("code")
    cells = plan.report_cells()
    assert {x.row for x in cells if x.benchmark == "aime_easy"} >= {"zero_shot", "expert", "ties"}
    # the report: one column per suite benchmark, the average over all of them
    scores = {}
    for x in cells:
        if "@" in x.row:
            continue
        f = tmp_path / "scores" / x.model / f"{x.benchmark}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        metric = {"ifeval": "prompt_level_loose_acc"}.get(x.benchmark, "pass@1")
        value = 0.5 if x.benchmark == "aime_easy" else 0.25
        f.write_text(f'{{"headline": "{metric}", "metrics": {{"{metric}": {value}}}}}')
        scores.setdefault(x.row, {})[x.benchmark] = f
    write_report(scores, tmp_path / "table1", str(tmp_path / "suite.yaml"), "per_task")
    table = read_table(tmp_path / "table1.csv")
    assert table["ties"]["aime_easy"] == 50.0
    assert table["ties"]["average"] == round((5 * 25.0 + 50.0) / 6, 1)
    assert (tmp_path / "table1.csv").read_text().splitlines()[0] == (
        "model,humaneval,humanevalplus,aime24,aime25,ifeval,aime_easy,average"
    )
    assert "| ifeval | aime_easy | average |" in (tmp_path / "table1.md").read_text()
    # against a baseline without the column: the new cells are named, the averages not compared
    from evals.report import compare

    old = {r: {c: v for c, v in vals.items() if c != "aime_easy"} for r, vals in table.items()}
    for vals in old.values():
        vals["average"] = 25.0
    changes = compare(table, old, 0.5)
    assert {m["change"] for m in changes} == {"new cell aime_easy"}
    assert len(changes) == len(table)


def test_per_expert_parameters_reach_the_spec_file_by_name():
    """A mapping by expert name goes to the spec file as written, with the names in expert order;
    the engine resolves it (checked at DAG-build time here)."""
    c = cfg("demo")
    c["merges"]["ties"]["params"] = {"density": {"code": 0.3, "math": 0.1, "if": 0.5}}
    spec = Plan(c).merge_spec("ties")
    assert spec["expert_names"] == ["math", "code", "if"]
    assert spec["params"]["density"] == {"code": 0.3, "math": 0.1, "if": 0.5}
    from merges.registry import get_method

    p = get_method("ties").parse_params(spec["params"], spec["expert_names"])
    assert p.density == [0.1, 0.3, 0.5]
