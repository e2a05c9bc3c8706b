"""Generation with vLLM (CPU build) from a tiny merged model, scored end to end, and its errors."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from evals.errors import EvalInputError
from evals.generate import generate, plan
from evals.registry import get_suite
from merges.engine import MergeSpec, run_merge

ENV = dict(
    os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
)


def evals_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "evals", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=1200,
    )


def test_humaneval_and_plus_share_one_generation():
    groups = plan("smoke", None)
    assert list(groups) == ["aime24", "aime25", "humaneval", "ifeval"]
    assert list(plan("smoke", ["humanevalplus"])) == ["humaneval"]
    assert get_suite("table1").benchmark("aime24").sampling.n == 32
    assert get_suite("smoke").benchmark("aime24").sampling.n == 2


def test_template_errors_before_the_engine_starts(tiny_family, tmp_path):
    base, experts = tiny_family
    with pytest.raises(EvalInputError, match="has no chat template, which the 'paper' policy uses"):
        generate(base, "smoke", tmp_path / "s")
    with pytest.raises(EvalInputError, match=r"per_task.*--domain-template \w+=DIR"):
        generate(experts[0], "smoke", tmp_path / "s", template="per_task")
    with pytest.raises(
        EvalInputError,
        match="unknown suite 'tiny'; valid suites: demo, demo_dev, smoke, smoke_dev, table1",
    ):
        generate(experts[0], "tiny", tmp_path / "s")
    with pytest.raises(EvalInputError, match="suite 'smoke' has no benchmark 'mmlu'"):
        generate(experts[0], "smoke", tmp_path / "s", benchmarks=["mmlu"])
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_generate_every_demo_benchmark_and_score(tiny_family, tmp_path):
    pytest.importorskip("vllm")
    base, experts = tiny_family
    merged = tmp_path / "ta"
    run_merge(
        MergeSpec("task_arithmetic", base, list(experts), merged, device="cpu"), progress=False
    )
    out = tmp_path / "samples"
    domains = [
        f"--domain-template={d}={e}" for d, e in zip(("math", "code", "if"), experts, strict=True)
    ]
    args = ["generate", "--model", merged, "--suite", "smoke", "--output", out]
    args += ["--template", "per_task", *domains, "--limit", "3", "--enforce-eager"]
    r = evals_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    for gen, n in (("aime24", 2), ("aime25", 2), ("humaneval", 2), ("ifeval", 1)):
        rows = [json.loads(line) for line in gzip.open(out / f"{gen}.jsonl.gz", "rt")]
        assert len(rows) == 3 and all(
            len(r["completions"]) == n and len(r["finish_reasons"]) == n for r in rows
        )
        meta = json.loads((out / f"{gen}.meta.json").read_text())
        assert meta["template"]["policy"] == "per_task" and meta["limit"] == 3
    code_tmpl = json.loads((out / "humaneval.meta.json").read_text())["template"]["source"]
    math_tmpl = json.loads((out / "aime24.meta.json").read_text())["template"]["source"]
    assert code_tmpl.endswith("code") and math_tmpl.endswith("math")
    assert rows[0]["prompt"].startswith(
        "<|im_start|>user"
    )  # IFEval through the IF expert's ChatML template
    for bench, gen in (
        ("aime24", "aime24"),
        ("aime25", "aime25"),
        ("humaneval", "humaneval"),
        ("humanevalplus", "humaneval"),
        ("ifeval", "ifeval"),
    ):
        r = evals_cli(
            "score",
            "--benchmark",
            bench,
            "--samples",
            out / f"{gen}.jsonl.gz",
            "--output",
            tmp_path / f"{bench}.json",
        )
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads((tmp_path / f"{bench}.json").read_text())
        assert res["n_items"] == 3 and all(0.0 <= v <= 1.0 for v in res["metrics"].values())
    # a rerun skips finished benchmarks without starting an engine
    before = (out / "aime24.jsonl.gz").read_bytes()
    r = evals_cli(*args)
    assert (
        r.returncode == 0
        and "samples complete, skipped" in r.stderr
        and "vllm" not in r.stderr.lower()
    )
    assert (out / "aime24.jsonl.gz").read_bytes() == before
    manifest = json.loads((out / "generation.json").read_text())
    assert sorted(manifest["generations"]) == ["aime24", "aime25", "humaneval", "ifeval"]


@pytest.mark.slow
def test_a_batch_reuses_the_engine_and_gives_each_folder_its_own_samples(tiny_family, tmp_path):
    """One engine serves two merged folders (weights reloaded in place): the second folder's
    samples equal those of an engine started for it alone, and differ from the first's."""
    pytest.importorskip("vllm")
    base, experts = tiny_family
    folders = {}
    for method in ("task_arithmetic", "average"):
        folders[method] = tmp_path / method
        run_merge(
            MergeSpec(method, base, list(experts), folders[method], device="cpu"), progress=False
        )
    common = ["--suite", "smoke", "--benchmark", "aime24", "--benchmark", "humaneval"]
    common += ["--template", "paper", "--limit", "3", "--enforce-eager"]
    alone = tmp_path / "alone"
    r = evals_cli("generate", "--model", folders["average"], "--output", alone, *common)
    assert r.returncode == 0, r.stderr[-3000:]

    targets = [
        {"model": str(folders[m]), "output": str(tmp_path / "batch" / m), "template": "paper"}
        | {"benchmarks": ["aime24", "humaneval"]}
        for m in ("task_arithmetic", "average")
    ]
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {"suite": "smoke", "limit": 3, "engine": {"enforce_eager": True}, "targets": targets}
        )
    )
    manifest = tmp_path / "manifest.json"
    r = evals_cli("generate", "--request", request, "--manifest", manifest)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads(manifest.read_text())["targets"]
    assert [t["engine"]["weights"] for t in done] == ["started", "reloaded"]
    assert all(t["generated"] == ["aime24", "humaneval"] for t in done)

    def rows(folder, gen):
        return [json.loads(line) for line in gzip.open(folder / f"{gen}.jsonl.gz", "rt")]

    for gen in ("aime24", "humaneval"):
        assert rows(tmp_path / "batch" / "average", gen) == rows(alone, gen)
        assert rows(tmp_path / "batch" / "task_arithmetic", gen) != rows(alone, gen)
    # a second run reuses every sample without starting an engine
    r = evals_cli("generate", "--request", request, "--manifest", manifest)
    done = json.loads(manifest.read_text())["targets"]
    assert r.returncode == 0 and all(t["engine"] is None and not t["generated"] for t in done)


def test_a_batch_request_is_checked_before_any_engine_starts(tiny_family, tmp_path):
    base, experts = tiny_family
    request = tmp_path / "request.json"
    good = {"model": str(experts[0]), "output": str(tmp_path / "a"), "template": "per_task"}
    request.write_text(json.dumps({"suite": "smoke", "targets": [good]}))
    r = evals_cli("generate", "--request", request, "--manifest", tmp_path / "m.json")
    assert r.returncode == 2 and "per_task" in r.stderr and "--domain-template" in r.stderr
    request.write_text(json.dumps({"suite": "smoke", "targets": [good | {"colour": 1}]}))
    r = evals_cli("generate", "--request", request, "--manifest", tmp_path / "m.json")
    assert r.returncode == 2 and "colour" in r.stderr and "Traceback" not in r.stderr
    request.write_text(json.dumps({"suite": "smoke", "engine": {"swap": 4}, "targets": [good]}))
    r = evals_cli("generate", "--request", request, "--manifest", tmp_path / "m.json")
    assert r.returncode == 2 and "swap" in r.stderr and "Traceback" not in r.stderr
    r = evals_cli("generate", "--request", request, "--model", experts[0])
    assert r.returncode == 2 and "--manifest" in r.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "a").exists()


def test_a_max_tokens_cap_lowers_only_longer_budgets():
    """`max_tokens` of a request (eval.max_tokens) caps each benchmark's budget, leaves shorter
    budgets and every other sampling setting alone, and never changes the suite's definition."""
    from evals.generate import capped
    from evals.registry import get_suite

    suite = get_suite("table1")
    aime, ifeval = suite.benchmark("aime24"), suite.benchmark("ifeval")
    short = capped(aime, 8)
    assert short.sampling.max_tokens == 8 and aime.sampling.max_tokens == 16384
    assert short.sampling.model_dump() | {"max_tokens": 16384} == aime.sampling.model_dump()
    assert capped(ifeval, 4096) is ifeval and capped(aime, None) is aime
