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
        EvalInputError, match="unknown suite 'tiny'; valid suites: demo, smoke, table1"
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
