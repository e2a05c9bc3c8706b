"""Sweeps expanded into points: ids, parameters, the seeded subset, and one clear error for a value
outside a parameter's range, at plan time."""

import itertools

import pytest

from merges.registry import get_method
from pipeline.sweeps import SweepError, expand

EXPERTS = {"math": {}, "code": {}, "if": {}}


def config(merges: dict, sweeps: dict) -> dict:
    return {"models": {"experts": EXPERTS}, "merges": merges, "sweeps": sweeps}


def test_a_grid_is_every_combination_in_order_with_readable_ids():
    merges = {"task_arithmetic": {"method": "task_arithmetic", "params": {"scale": 0.4}},
              "ties": {"method": "ties", "params": {"scale": 1.0}}}  # fmt: skip
    grid = {"density": [0.1, 0.2, 0.4], "variant": ["official", "mergekit"]}
    sweeps = {"task_arithmetic": {"grid": {"scale": [0.2, 0.4, 0.6, 0.8, 1.0]}},
              "ties": {"grid": grid}}  # fmt: skip
    points = expand(config(merges, sweeps))
    ta = points["task_arithmetic"]
    assert [p.id for p in ta] == [f"task_arithmetic.scale={v}" for v in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert [p.params for p in ta] == [{"scale": v} for v in (0.2, 0.4, 0.6, 0.8, 1.0)]
    ties = points["ties"]
    assert [p.values for p in ties] == [
        (("density", d), ("variant", v)) for d, v in itertools.product(*grid.values())
    ]
    assert ties[1].id == "ties.density=0.1,variant=mergekit"
    assert ties[1].params == {"scale": 1.0, "density": 0.1, "variant": "mergekit"}
    parsed = get_method("ties").parse_params(ties[1].params, list(EXPERTS))
    assert parsed.density == [0.1, 0.1, 0.1] and parsed.variant == "mergekit"
    assert merges["ties"]["params"] == {"scale": 1.0}  # the merge's own entry is left alone


def test_a_seeded_subset_is_a_stable_part_of_the_grid():
    merges = {"ties": {"method": "ties"}}
    grid = {"density": [0.1, 0.2, 0.3, 0.4], "scale": [0.5, 0.75, 1.0]}

    def ids(seed, n=5):
        return [p.id for p in expand(config(merges, {"ties": {"grid": grid, "sample": {"n": n, "seed": seed}}}))["ties"]]  # fmt: skip

    every = [p.id for p in expand(config(merges, {"ties": {"grid": grid}}))["ties"]]
    assert len(every) == 12 and len(ids(0)) == 5 and len(set(ids(0))) == 5
    assert ids(0) == ids(0) and ids(0) != ids(1)
    assert ids(0) == [i for i in every if i in ids(0)]  # in grid order
    assert ids(0, n=50) == every


def test_one_experts_value_of_a_per_expert_parameter():
    merges = {"linear": {"method": "linear", "params": {"weight": {"math": 1.0, "code": 1.0, "if": 2.0}}},
              "ties": {"method": "ties", "params": {"density": 0.3}}}  # fmt: skip
    sweeps = {
        "linear": {"grid": {"weight.if": [1.0, 3.0]}},
        "ties": {"grid": {"density.code": [0.5]}},
    }
    points = expand(config(merges, sweeps))
    assert [p.id for p in points["linear"]] == ["linear.weight.if=1.0", "linear.weight.if=3.0"]
    assert points["linear"][1].params == {"weight": {"math": 1.0, "code": 1.0, "if": 3.0}}
    (tp,) = points["ties"]
    assert tp.params == {"density": {"math": 0.3, "code": 0.5, "if": 0.3}}
    assert get_method("ties").parse_params(tp.params, list(EXPERTS)).density == [0.3, 0.5, 0.3]


@pytest.mark.parametrize(
    "merges,sweep,message",
    [
        ({"ties": {"method": "ties"}}, {"ties": {"grid": {"density": [0.2, 1.5]}}},
         "config error at sweeps.ties.grid.density: 1.5 is outside the range of 'density' of "
         "method 'ties': 0 < density ≤ 1"),
        ({"r": {"method": "regmean"}}, {"r": {"grid": {"alpha": [-0.1]}}},
         "sweeps.r.grid.alpha: -0.1 is outside the range of 'alpha' of method 'regmean': "
         "0 ≤ alpha ≤ 1"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"variant": ["mine"]}}},
         "one of 'official', 'mergekit'"),
        ({"t": {"method": "ties"}}, {"x": {"grid": {"density": [0.2]}}},
         "sweeps.x: no merge 'x' in merges; sweep one of: t"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"lambda": [0.2]}}},
         "sweeps.t.grid.lambda: method 'ties' has no parameter 'lambda'"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"scale.math": [0.2]}}},
         "'scale' is one value for all experts"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"density.chat": [0.2]}}},
         "merge 't' has no expert 'chat'"),
    ],
)  # fmt: skip
def test_a_bad_sweep_is_one_error_naming_the_merge_parameter_and_range(merges, sweep, message):
    with pytest.raises(SweepError) as e:
        expand(config(merges, sweep))
    assert message in str(e.value)


# --- the plan and the selection --------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from mergeeval.errors import InputError  # noqa: E402
from pipeline.select import choose, copy_selected  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = {"task_arithmetic": {"grid": {"scale": [0.2, 0.4, 0.6]}},
          "ties": {"grid": {"density": [0.2, 0.5]}, "select": "ifeval"}}  # fmt: skip


def smoke(sweeps=SWEEPS, **eval_over) -> dict:
    c = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    c["eval"] |= eval_over
    return c | {"sweeps": sweeps}


@pytest.fixture
def plan(monkeypatch):
    from pipeline.plan import Plan

    monkeypatch.chdir(ROOT)
    return Plan(smoke())


def test_a_validation_batch_holds_one_sweeps_points(monkeypatch):
    """A change to one swept merge reruns its own validation batches and selection only."""
    from pipeline.plan import Plan

    monkeypatch.chdir(ROOT)
    plan = Plan(smoke(models_per_job=2))
    ta = [f"task_arithmetic.scale={v}" for v in (0.2, 0.4, 0.6)]
    ties = ["ties.density=0.2", "ties.density=0.5"]
    assert plan.val_batches == {"val1": ta[:2], "val2": ta[2:], "val3": ties}
    assert plan.sweep_batches("ties") == ["val3"]


def test_points_are_merge_jobs_scored_on_validation_and_rows_are_selected(plan):
    ta = [f"task_arithmetic.scale={v}" for v in (0.2, 0.4, 0.6)]
    ties = ["ties.density=0.2", "ties.density=0.5"]
    assert plan.merge_jobs == [m for m in plan.merges if m not in SWEEPS] + ta + ties
    assert plan.merge_spec(ta[2])["params"] == {"scale": 0.6}
    assert plan.merge_spec(ta[2])["output"] == "results/smoke/models/task_arithmetic.scale=0.6"
    # test batches hold the rows (a swept merge's row is its selected point), never a point
    tested = {m for models in plan.batches.values() for m in models}
    assert "task_arithmetic" in tested and not tested & {*ta, *ties}
    # validation batches: every point, on the validation suite only
    assert plan.val_batches == {f"val{i}": [p] for i, p in enumerate(ta + ties, start=1)}
    req = plan.generate_request("val3")
    assert req["suite"] == "smoke_dev" and len(req["targets"]) == 1
    (t,) = req["targets"]
    assert t["model"] == plan.merge_dir(ta[2]) and "validation" in t["output"]
    scored = plan.score_request("val3")["scores"]
    assert {s["benchmark"] for s in scored} == set(plan.validation_suite.benchmarks)
    assert all("/validation/scores/" in s["output"] for s in scored)
    record = plan.sweep_record("ties")
    assert record["rule"] == "ifeval" and [p["id"] for p in record["points"]] == ties
    assert plan.sweep_batches("ties") == ["val4", "val5"]


def test_validation_items_are_never_test_items():
    """Every suite's validation suite shares no item with it (the prompt fields)."""
    from evals.data import load_items
    from evals.registry import get_suite, suites

    checked = 0
    for name, suite in suites().items():
        if not suite.validation:
            continue
        val = get_suite(suite.validation)
        for b in suite.benchmarks:
            if b not in val.benchmarks:
                continue
            bt, bv = suite.benchmark(b), val.benchmark(b)
            test, _ = load_items(bt, suite.fixture_file(bt), suite.data, None)
            dev, _ = load_items(bv, val.fixture_file(bv), val.data, None)
            text = lambda items: {json.dumps(i.fields, sort_keys=True) for i in items}  # noqa: E731
            assert dev and not text(test) & text(dev), (name, b)
            checked += 1
    assert checked >= 5


def score_file(tmp_path, point, bench, headline_value, metric="pass@1"):
    path = tmp_path / point / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {metric: headline_value}}))
    return str(path)


def test_the_rule_picks_the_best_validation_point_and_ties_go_to_the_first(tmp_path):
    from evals.registry import get_suite

    suite = get_suite("smoke_dev")
    heads = {b: suite.benchmark(b).headline for b in suite.benchmarks}
    table = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5, 0.1, 0.1, 0.1, 0.9], "c": [0.2] * 5}
    points = [
        {"id": pid, "values": {"scale": i}, "scores": {
            b: score_file(tmp_path, pid, b, v, heads[b]) for b, v in zip(suite.benchmarks, vals, strict=True)}}
        for i, (pid, vals) in enumerate(table.items())
    ]  # fmt: skip
    sweep = {"merge": "m", "suite": "smoke_dev", "rule": "average", "points": points}
    rec = choose(sweep)
    averages = {p: 100 * sum(v) / 5 for p, v in table.items()}  # a: 30, b: 34, c: 20
    assert [round(p["value"], 6) for p in rec["points"]] == [round(averages[p], 6) for p in table]
    assert rec["selected"] == "b" and rec["values"] == {"scale": 1}
    ifeval_col = list(suite.benchmarks).index("ifeval")
    rec = choose(sweep | {"rule": "ifeval"})
    assert rec["selected"] == max(table, key=lambda p: table[p][ifeval_col])
    # equal values: the first in grid order
    same = [p | {"scores": points[2]["scores"]} for p in points]
    assert choose(sweep | {"points": same})["selected"] == "a"


def test_the_selected_folder_becomes_the_row(tmp_path):
    folder = tmp_path / "models/m.scale=0.6"
    folder.mkdir(parents=True)
    (folder / "merge.json").write_text('{"params": {"scale": 0.6}}')
    (tmp_path / "fp.json").write_text('{"tensors": {}}')
    selection = tmp_path / "m.json"
    selection.write_text(json.dumps({"selected": "m.scale=0.6", "values": {"scale": 0.6}}))
    sweep = {"points": [{"id": "m.scale=0.6", "folder": str(folder),
                         "fingerprint": str(tmp_path / "fp.json")}]}  # fmt: skip
    out = tmp_path / "models/m"
    copy_selected(selection, sweep, out, tmp_path / "raw/m.json")
    assert json.loads((out / "merge.json").read_text()) == {"params": {"scale": 0.6}}
    assert json.loads((out / "sweep.json").read_text())["selected"] == "m.scale=0.6"
    assert json.loads((tmp_path / "raw/m.json").read_text()) == {"tensors": {}}


@pytest.mark.parametrize(
    "sweeps,eval_over,message",
    [
        ({"ties": {"grid": {"density": [0.2, 1.5]}}}, {},
         "error: config error at sweeps.ties.grid.density: 1.5 is outside the range of 'density' "
         "of method 'ties': 0 < density ≤ 1"),
        ({"ties": {"grid": {"density": [0.2]}, "select": "mbpp"}}, {},
         "error: config error at sweeps.ties.select: 'mbpp' is neither 'average' nor a benchmark"),
        ({"ties": {"grid": {"density": [0.2]}}}, {"validation_suite": "smoke"},
         "error: config error at eval.validation_suite: is the test suite itself"),
    ],
)  # fmt: skip
def test_a_bad_sweep_stops_the_plan_with_one_error(tmp_path, sweeps, eval_over, message):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(smoke(sweeps, **eval_over)))
    r = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile", tmp_path / "cfg.yaml"],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and errors[0].startswith(message), r.stderr[
        -2000:
    ]


def test_a_suite_without_validation_suite_makes_sweeps_say_so(monkeypatch, tmp_path):
    from pipeline.config import load

    monkeypatch.chdir(ROOT)
    suite = yaml.safe_load((ROOT / "evals/suites/demo.yaml").read_text())
    assert suite.pop("validation") == "demo_dev"
    (tmp_path / "novalidation.yaml").write_text(yaml.safe_dump(suite | {"name": "novalidation"}))
    c = yaml.safe_load((ROOT / "config/demo.yaml").read_text()) | {"sweeps": SWEEPS}
    c["eval"]["suite"] = str(tmp_path / "novalidation.yaml")
    with pytest.raises(InputError, match="names no validation suite; set eval.validation_suite"):
        load(c)


def suite_texts(suite_name: str) -> dict[str, list[str]]:
    """Per benchmark of a suite, the longest text field of every item (what a prompt contains)."""
    from evals.data import load_items
    from evals.registry import get_suite

    suite = get_suite(suite_name)
    out = {}
    for b in suite.benchmarks:
        bench = suite.benchmark(b)
        items = load_items(bench, suite.fixture_file(bench), "fixture", None)[0]
        out[b] = [max((v for v in i.fields.values() if isinstance(v, str)), key=len) for i in items]
    return out


def assert_points_met_validation_only(results: Path, sweeps: dict, val: str, test: str) -> None:
    """Every sweep point was generated and scored on every validation item and on no test item;
    only the selected rows have test samples; each row is its selected point's folder."""
    import gzip

    from evals.registry import get_suite

    suite, dev, held = get_suite(val), suite_texts(val), suite_texts(test)
    for merge in sweeps:
        selection = json.loads((results / f"sweeps/{merge}.json").read_text())
        assert selection["selected"] in [p["id"] for p in selection["points"]]
        chosen, row = results / "models" / selection["selected"], results / "models" / merge
        assert (row / "merge.json").read_text() == (chosen / "merge.json").read_text()
        assert (row / "model.safetensors").read_bytes() == (
            chosen / "model.safetensors"
        ).read_bytes()
        assert (results / "scores" / merge).is_dir()
        for p in selection["points"]:
            point = p["id"]
            assert not (results / "scores" / point).exists(), point
            assert not (results / "samples" / point).exists(), point
            files = sorted((results / "validation/scores" / point).glob("*.json"))
            assert [f.stem for f in files] == sorted(suite.benchmarks), point
            for f in files:
                gen = suite.benchmark(f.stem).generation_name
                path = results / "validation/samples" / point / f"{gen}.jsonl.gz"
                rows = [json.loads(x) for x in gzip.open(path, "rt")]
                assert len(rows) == len(dev[f.stem]), (point, f.stem)
                for r in rows:  # the item a prompt holds: the longest item text in it
                    item = max((t for t in dev[f.stem] + held[f.stem] if t in r["prompt"]), key=len)
                    assert item in dev[f.stem] and item not in held[f.stem], r["prompt"]


def _selection(tmp_path, mid, grid: list[dict], chosen: int) -> Path:
    points = [{"id": f"{mid}.{i}", "values": v, "scores": {}, "value": float(10 + i)}
              for i, v in enumerate(grid)]  # fmt: skip
    rec = {"merge": mid, "validation_suite": "dev", "rule": "average",
           "selected": points[chosen]["id"], "values": grid[chosen], "points": points}  # fmt: skip
    path = tmp_path / f"{mid}.json"
    path.write_text(json.dumps(rec))
    return path


def test_the_report_says_when_a_selected_value_is_at_the_edge_of_its_grid(tmp_path):
    from evals.report_sweeps import sweep_report

    scales = [{"scale": x} for x in (0.2, 0.6, 1.0)]
    two = [{"scale": x, "variant": v} for x in (0.1, 0.5, 0.9) for v in ("a", "b")]
    selections = {
        "high": _selection(tmp_path, "high", scales, 2),
        "middle": _selection(tmp_path, "middle", scales, 1),
        "low": _selection(tmp_path, "low", two, 1),  # scale 0.1 (lowest), a label
        "short": _selection(tmp_path, "short", scales[:2], 1),  # two values: no edge to speak of
    }
    lines, record = sweep_report(selections, {"high": {"average": 50.0}}, tmp_path / "plots")
    assert record["high"]["grid_edges"] == {"scale": "highest"}
    assert record["middle"]["grid_edges"] == {} and record["short"]["grid_edges"] == {}
    assert record["low"]["grid_edges"] == {"scale": "lowest"}
    notes = [x for x in lines if "is the" in x and "value of its grid" in x]
    assert len(notes) == 2
    assert (
        notes[0].startswith("- high: scale = 1.0 is the highest value")
        and "sweeps.high" in notes[0]
    )
    assert notes[1].startswith("- low: scale = 0.1 is the lowest value")
    assert all((tmp_path / "plots" / f"{m}.png").is_file() for m in selections)
    assert record["high"]["test_average"] == 50.0


def test_a_validation_suite_file_reaches_the_jobs_by_its_path(monkeypatch, tmp_path):
    """eval.validation_suite as a user's suite file: the validation requests and the selection's
    sweep record name the file (a job must be able to load it), and the selection reads it."""
    from evals.registry import get_suite
    from pipeline.plan import Plan

    monkeypatch.chdir(ROOT)
    dev = yaml.safe_load((ROOT / "evals/suites/demo_dev.yaml").read_text()) | {"name": "my_dev"}
    path = tmp_path / "my_dev.yaml"
    path.write_text(yaml.safe_dump(dev))
    c = yaml.safe_load((ROOT / "config/demo.yaml").read_text()) | {"sweeps": SWEEPS}
    c["eval"]["validation_suite"] = str(path)
    plan = Plan(c)
    assert plan.validation_suite.name == "my_dev"
    assert {plan.generate_request(b)["suite"] for b in plan.val_batches} == {str(path)}
    record = plan.sweep_record(next(iter(SWEEPS)))
    assert record["suite"] == str(path) and get_suite(record["suite"]).name == "my_dev"
