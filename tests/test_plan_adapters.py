"""Adapter experts and adapter outputs in a run config: local paths, hub adapters, the merge specs
and generation requests they plan, and the config errors (pipeline.config, pipeline.plan)."""

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.plan import Plan
from pipeline.revisions import hub_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(ROOT)


def _adapter(folder: Path) -> Path:
    """A folder that looks like a PEFT adapter to the planner (config only: plans read no weights)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    return folder


def _config(tmp_path, **merges) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["models"]["experts"] = {
        "math": {"path": str(_adapter(tmp_path / "lora_math"))},
        "code": {"path": str(_adapter(tmp_path / "lora_code"))},
        "if": {},
    }
    cfg["merges"] = merges or {
        "ties": {"method": "ties"},
        "ta_adapter": {
            "method": "task_arithmetic",
            "experts": ["math", "code"],
            "output": "adapter",
        },
    }
    return cfg


def test_local_adapter_experts_plan_merges_and_lora_generation(tmp_path):
    plan = Plan(_config(tmp_path))
    spec = plan.merge_spec("ta_adapter")
    assert spec["experts"] == [str(tmp_path / "lora_math"), str(tmp_path / "lora_code")]
    assert spec["output_format"] == "adapter" and "adapter_rank" not in spec
    assert plan.merge_spec("ties")["output_format"] == "model"
    assert plan.merge_spec("ties")["experts"][2] == "resources/tiny/if"
    assert [plan.is_adapter(m) for m in ("base", "math", "code", "if", "ties", "ta_adapter")] == [
        False, True, True, False, False, True
    ]  # fmt: skip
    targets = {
        t["output"].rsplit("/", 1)[-1]: t
        for b in plan.batches
        for t in plan.generate_request(b)["targets"]
    }
    for name in ("math", "code", "ta_adapter"):
        assert targets[name]["lora_base"] == "resources/tiny/base", name
    for name in ("base", "if", "ties"):
        assert "lora_base" not in targets[name], name
    # RegMean's per-expert statistics run an adapter expert on its base; the authors' recipe
    # runs the base itself
    assert "--lora-base resources/tiny/base" in plan.stats_args("per_expert", "math")
    assert "--lora-base" not in plan.stats_args("per_expert", "if")
    assert "--lora-base" not in plan.stats_args("authors", "math")


def test_hub_adapters_are_locked_and_local_paths_are_not(tmp_path):
    cfg = _config(tmp_path, ties={"method": "ties"})
    cfg["models"]["source"] = "hub"
    cfg["models"]["base"] = {"repo_id": "org/base", "revision": "a" * 40}
    cfg["models"]["experts"]["if"] = {
        "repo_id": "org/if-lora",
        "revision": "b" * 40,
        "adapter": True,
    }
    plan = Plan(cfg)
    keys = [i.key for i in hub_inputs(plan.config, plan.suite)]
    assert "models.experts.if" in keys and "models.experts.math" not in keys
    assert plan.is_adapter("if") and plan.model_dir("math") == str(tmp_path / "lora_math")


@pytest.mark.parametrize(
    "change,key,match",
    [
        (lambda c, t: c["models"]["experts"].update({"if": {"path": str(t / "nowhere")}}),
         "models.experts.if.path", "neither a model folder"),
        (lambda c, t: c["models"].update({"base": {"path": str(t / "lora_math")}}),
         "models.base.path", "the base must be the full model"),
        (lambda c, t: c["merges"].update({"x": {"method": "ties", "output": "adapter"}}),
         "merges.x.output", "needs adapter_rank or adapter_energy"),
        (lambda c, t: c["merges"].update({"x": {"method": "ties", "adapter_rank": 4}}),
         "merges.x.adapter_rank", "applies only with output: adapter"),
        (lambda c, t: c["merges"].update(
            {"x": {"method": "ties", "output": "adapter", "adapter_rank": 4, "adapter_energy": 0.9}}),
         "merges.x", "not both"),
    ],
)  # fmt: skip
def test_adapter_config_errors_name_the_key(change, key, match, tmp_path):
    cfg = _config(tmp_path)
    change(cfg, tmp_path)
    with pytest.raises(ConfigError, match=match) as e:
        Plan(cfg)
    assert str(e.value).startswith(f"config error at {key}:")


def _grouped(tmp_path) -> dict:
    """Full experts and, beside them, a group of adapters (the demo's adapted-experts block)."""
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    for d in ("math", "code"):
        cfg["models"]["experts"][f"{d}_lora"] = {
            "path": str(_adapter(tmp_path / f"lora_{d}")),
            "domain": d,
            "group": "lora",
        }
    cfg["merges"] = {
        "ties": {"method": "ties"},
        "lora_ties": {"method": "ties", "experts": "lora"},
        "mixed": {"method": "ties", "experts": ["math", "code_lora"]},
    }
    return cfg


def test_an_expert_group_is_a_block_of_its_own(tmp_path):
    plan = Plan(_grouped(tmp_path))
    assert plan.merge_experts("ties") == ["math", "code", "if"]
    assert plan.merge_experts("lora_ties") == ["math_lora", "code_lora"]
    assert plan.block_rows() == {"expert_lora": "lora", "lora_ties": "lora"}  # mixed: main block
    cells = {(c.row, c.benchmark): c.model for c in plan.report_cells()}
    assert cells["expert", "humaneval"] == "code" and cells["expert", "ifeval"] == "if"
    assert cells["expert_lora", "humaneval"] == "code_lora"
    assert ("expert_lora", "ifeval") not in cells  # the group has no IF expert
    # the per_task templates are the main experts'
    assert plan.domain_templates()["math"] == "resources/tiny/math"
    args = plan.report_args()
    assert "--block lora_ties=lora" in args and "--block mixed" not in args
    assert "--block-title 'lora=Adapted experts (group `lora`)" in args


@pytest.mark.parametrize(
    "change,key,match",
    [
        (lambda c: c["merges"].update({"x": {"method": "ties", "experts": "nope"}}),
         "merges.x.experts", "'nope' is no expert group"),
        (lambda c: c["merges"].update({"expert_lora": {"method": "ties"}}),
         "merges.expert_lora", "a group's expert-row name"),
        (lambda c: [e.update(group="lora") for e in c["models"]["experts"].values()],
         "merges.ties.experts", "every expert has a group"),
    ],
)  # fmt: skip
def test_expert_group_errors_name_the_key(change, key, match, tmp_path):
    cfg = _grouped(tmp_path)
    change(cfg)
    with pytest.raises(ConfigError, match=match) as e:
        Plan(cfg)
    assert str(e.value).startswith(f"config error at {key}:")


def test_the_report_shows_a_group_block_without_paper_numbers(tmp_path):
    from evals.report import write_report

    cells = {}
    for row in ("zero_shot", "ties", "expert_lora", "lora_ties"):
        for b, v in (("aime24", 0.5), ("ifeval", 0.25)):
            f = tmp_path / f"{row}_{b}.json"
            f.write_text(
                json.dumps(
                    {"headline": "pass@1", "metrics": {"pass@1": v, "prompt_level_loose_acc": v}}
                )
            )
            cells.setdefault(row, {})[b] = f
    blocks = {"expert_lora": "lora", "lora_ties": "lora"}
    rec = write_report(
        cells, tmp_path / "t", "table1", "per_task", blocks=blocks,
        block_titles={"lora": "Adapted experts (group `lora`)"},
    )  # fmt: skip
    assert rec["blocks"] == blocks
    md = (tmp_path / "t.md").read_text()
    main, block = md.split("## Adapted experts (group `lora`)")
    assert "| ties |" in main and "| lora_ties |" not in main
    assert "| lora_ties |" in block and "| expert_lora |" in block and "paper" not in block
    assert "(paper" in main  # the main rows carry Table 1's numbers
