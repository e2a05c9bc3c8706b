"""Table 1's validation suite (table1_dev): AIME 2021-2023, MBPP+ through EvalPlus and IFEval-style
prompts other than IFEval's; the rows a hub source selects (year lists, seeded samples); MBPP+
scored by EvalPlus's checker with its MBPP oracles; and a Table 1 sweep that locks and requests the
dev datasets, never the test data."""

import json

import pytest

from evals.data import ifeval_items, load_items, select_rows
from evals.errors import EvalInputError
from evals.registry import get_benchmark, get_suite
from evals.samples import write_samples
from evals.score import score_file
from mergeeval.yamlio import load_yaml
from pipeline.plan import Plan
from tests.test_revisions import Hub

ROWS = [{"year": y, "i": i} for y in (2021, 2022, 2023, 2024, 2025) for i in range(30)]


def test_a_filter_keeps_one_value_or_any_of_a_list():
    assert {r["year"] for r in select_rows(ROWS, {"filter": {"year": 2024}})} == {2024}
    dev = select_rows(ROWS, {"filter": {"year": [2021, 2022, 2023]}})
    assert len(dev) == 90 and {r["year"] for r in dev} == {2021, 2022, 2023}
    assert select_rows(ROWS, {"filter": {"year": ["2025"]}}) == ROWS[120:]  # compared as text


def test_a_sample_is_seeded_in_data_order_and_a_subset():
    a = select_rows(ROWS, {"sample": {"n": 20, "seed": 0}})
    assert a == select_rows(ROWS, {"sample": {"n": 20, "seed": 0}})
    assert len(a) == 20 and all(r in ROWS for r in a)
    assert [ROWS.index(r) for r in a] == sorted(ROWS.index(r) for r in a)
    assert a != select_rows(ROWS, {"sample": {"n": 20, "seed": 1}})
    assert select_rows(ROWS, {"sample": {"n": 500}}) == ROWS


def test_ifeval_like_rows_with_json_kwargs_read_as_ifeval():
    rows = [{"key": 5, "prompt": "p", "instruction_id_list": ["a:b", "c:d"],
             "kwargs": json.dumps([{"x": None, "n": 3}, {"x": None}]), "response": "r"}]  # fmt: skip
    (item,) = ifeval_items(rows, "data")
    assert item.id == 5 and item.reference["kwargs"] == [{"n": 3}, {}]
    assert "response" not in item.reference
    with pytest.raises(EvalInputError, match="2 kwargs for 1 instructions"):
        ifeval_items([rows[0] | {"instruction_id_list": ["a:b"]}], "data")
    with pytest.raises(EvalInputError, match="kwargs is not JSON"):
        ifeval_items([rows[0] | {"kwargs": "{not"}], "data")


def test_the_dev_suite_covers_every_domain_on_data_other_than_the_tests():
    test, dev = get_suite("table1"), get_suite("table1_dev")
    assert test.validation == "table1_dev" and dev.data == "hf"
    domains = lambda s: {s.benchmark(b).domain for b in s.benchmarks}  # noqa: E731
    assert domains(dev) == domains(test) == {"math", "code", "if"}
    sources = {b: test.benchmark(b).source for b in test.benchmarks}
    for b in dev.benchmarks:
        src = dev.benchmark(b).source
        same = [t for t, s in sources.items() if s.get("hf_dataset") == src.get("hf_dataset")
                and "hf_dataset" in src]  # fmt: skip
        for t in same:  # the same dataset (AIME): other rows
            years = set(src["filter"]["year"])
            assert years.isdisjoint({sources[t]["filter"]["year"]}), (b, t)
        assert "evalplus_release" not in src  # code: MBPP+, not the HumanEval+ release
    assert dev.benchmark("aime_dev").source["filter"]["year"] == [2021, 2022, 2023]


def test_every_dev_fixture_loads():
    dev = get_suite("table1_dev")
    for b in dev.benchmarks:
        items, origin = load_items(dev.benchmark(b), source="fixture")
        assert len(items) == 4 and origin.startswith("fixture "), b


def _mbpp(tmp_path, rows):
    samples = tmp_path / "mbppplus.jsonl"
    write_samples(samples, rows)
    return score_file("mbppplus", samples, tmp_path / "mbppplus.json", source="fixture")


def test_mbppplus_is_scored_by_evalplus_with_its_mbpp_oracles(tmp_path):
    items, _ = load_items(get_benchmark("mbppplus"), source="fixture")
    ref = {it.id: it.reference for it in items}
    # EvalPlus's deserializer made Mbpp/2's inputs tuples, as in its own get_mbpp_plus
    assert ref["Mbpp/2"]["base_input"][0] == [(3, 4, 5, 6), (5, 7, 4, 10)]
    completions = {
        "Mbpp/2": [
            ref["Mbpp/2"]["canonical_solution"],
            # another order of the same elements: right under MBPP's set-equality oracle
            "def similar_elements(a, b):\n    return sorted(set(a) & set(b), reverse=True)\n",
            "def similar_elements(a, b):\n    return tuple(a)\n",
        ],
        "Mbpp/901": [
            ref["Mbpp/901"]["canonical_solution"],
            # right on the base tests, wrong on the plus test 0
            "```python\ndef count_digits(n):\n    return len(str(n)) if n else 0\n```",
            "def count_digits(n):\n    return n\n",
        ],
        "Mbpp/902": [
            ref["Mbpp/902"]["canonical_solution"],
            # a bool is compared with whether the reference returned something (the non-None oracle)
            "def text_match_three(t):\n    return 'abbb' in t\n",
            "def text_match_three(t):\n    return 'x'\n",
        ],
        "Mbpp/903": [
            ref["Mbpp/903"]["canonical_solution"],
            "def circle_area(r):\n    return 3.14159265358979 * r * r\n",  # within EvalPlus's atol
            "def circle_area(r):\n    return 3.14 * r * r\n",
        ],
    }
    rows = [{"id": tid, "completions": c} for tid, c in completions.items()]
    res = _mbpp(tmp_path, rows)
    got = {it["id"]: it["correct"] for it in res["items"]}
    assert got == {
        "Mbpp/2": [True, True, False],
        "Mbpp/901": [True, False, False],
        "Mbpp/902": [True, True, False],
        "Mbpp/903": [True, True, False],
    }
    by_id = {it["id"]: it for it in res["items"]}
    assert by_id["Mbpp/901"]["base_status"][1] == "pass"
    assert by_id["Mbpp/901"]["plus_status"][1] == "fail"
    assert res["metrics"]["pass@1"] == pytest.approx((2 + 1 + 2 + 2) / 12)
    assert res["sandbox"] and res["data"] == "fixture mbppplus.jsonl"


def _locked_plan(config: dict, where, monkeypatch) -> Plan:
    """The plan of `config`, its revision lock written under `where` by a hub that has every
    input (branches at commit b...b)."""
    from pipeline.revisions import hub_inputs

    where.mkdir()
    monkeypatch.chdir(where)
    plan = Plan(config)
    items = hub_inputs(plan.config, plan.suite, plan.validation_suite if plan.points else None)
    plan.lock_revisions(resolve=Hub({(it.repo, it.revision): it.revision if len(it.revision) == 40
                                     else "b" * 40 for it in items}))  # fmt: skip
    return plan


def test_a_table1_sweep_locks_and_requests_the_dev_datasets_only(tmp_path, monkeypatch):
    """A sweep on Table 1 selects on table1_dev: the lock holds the dev datasets' commits, the
    validation requests name only them and only dev benchmarks, and the test requests are those of
    the same run without the sweep."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = load_yaml(root / "config/table1.yaml", "run config")
    plain = _locked_plan(json.loads(json.dumps(config)), tmp_path / "plain", monkeypatch)
    config["sweeps"] = {"task_arithmetic": {"grid": {"scale": [0.3, 0.5]}}}
    plan = _locked_plan(config, tmp_path / "swept", monkeypatch)
    lock = load_yaml(tmp_path / "swept/results/table1/revisions.lock.yaml", "lock")
    assert lock["benchmarks.aime_dev"]["repo"] == "allenai/aime-2021-2025"
    assert lock["benchmarks.ifeval_like"]["repo"] == "argilla/ifeval-like-data"
    assert "benchmarks.mbppplus" not in lock  # an EvalPlus release, not a hub dataset
    dev = {"mbppplus", "aime_dev", "ifeval_like"}
    targets = []
    for batch in plan.val_batches:
        req = plan.generate_request(batch)
        assert req["suite"] == "table1_dev"
        assert req["data_revisions"] == {"aime_dev": "b" * 40, "ifeval_like": "b" * 40}
        targets += req["targets"]
        assert {s["benchmark"] for s in plan.score_request(batch)["scores"]} == dev
    assert [set(t["benchmarks"]) for t in targets] == [dev, dev]  # both points, dev sets only
    assert list(plan.batches) == list(plain.batches)
    for batch in plan.batches:
        assert plan.generate_request(batch) == plain.generate_request(batch)
        assert set(plan.generate_request(batch)["data_revisions"]) == {"aime24", "aime25", "ifeval"}


def test_mbppplus_from_a_copy_of_the_release_says_so(tmp_path):
    """Without GitHub: EvalPlus's MBPP_OVERRIDE_PATH names a copy of the release; the items come
    from it and their origin names the file."""
    import gzip
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "MbppPlus-v0.2.0.jsonl.gz"
    copy.write_bytes(gzip.compress((root / "evals/fixtures/mbppplus.jsonl").read_bytes()))
    code = ("from evals.registry import get_benchmark; from evals.data import load_items\n"
            "items, origin = load_items(get_benchmark('mbppplus')); print(len(items)); print(origin)")  # fmt: skip
    env = {**os.environ, "MBPP_OVERRIDE_PATH": str(copy), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == [
        "4",
        f"evalplus mbpp v0.2.0 from {copy.resolve()} (MBPP_OVERRIDE_PATH)",
    ]
