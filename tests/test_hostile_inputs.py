"""No single sample or input file sinks a run: hostile AIME answers are scored wrong with a reason
(from any thread, through `python -m evals score`), and YAML alias bombs, oversized and too deeply
nested YAML files are refused with one message at every entry point."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from evals import registry
from evals.errors import EvalInputError
from evals.samples import write_samples
from evals.scorers import aime
from evals.scorers.aime import answer_key, extract_answer
from mergeeval.errors import InputError
from mergeeval.yamlio import MAX_BYTES, MAX_DEPTH, MAX_NODES, check_loaded, load_yaml
from merges.errors import MergeInputError
from merges.mergekit_config import read_yaml
from pipeline.config import ConfigError
from pipeline.config import load as load_config

ROOT = Path(__file__).resolve().parents[1]
TOO_BIG = "a part may have over 10000 digits"

# --- AIME --------------------------------------------------------------------------------------

HOSTILE = [  # (completion, part of the reason): refused from their structure, unevaluated
    ("\\boxed{9^{9^{9^{9}}}}", TOO_BIG),
    ("\\boxed{10^{10^{10^{10}}}}", TOO_BIG),
    ("Answer: 2^{2^{2^{2^{2^{2^{2}}}}}}", TOO_BIG),
    ("\\boxed{1000!!!}", TOO_BIG),
    ("\\boxed{(10^{10})!}", TOO_BIG),
    ("\\boxed{" + "9" * 90 + "^{" + "9" * 90 + "}}", TOO_BIG),  # huge-digit literals
    ("\\boxed{\\frac{9^{9^{9}}}{9^{9^{9}}}}", TOO_BIG),  # 1, but only through huge parts
    ("\\boxed{\\sin(10^{10^{10}})}", TOO_BIG),
    ("\\boxed{2^{1000}}", "value of 100+ digits"),
    ("\\boxed{\\frac{1}{0}}", "not an integer"),
    ("\\boxed{\\frac{1}{2}\\left(}", "not an integer"),  # malformed LaTeX
    ("\\boxed{\\sqrt[}{]}", "not an integer"),
]
SLOW = [  # math-verify's parser alone runs for minutes or more on these (partly in C loops)
    "\\boxed{\\binom{10^{10^{10}}}{2}}",  # evaluates 10^{10^{10}} in one C-level power
    "\\boxed{\\binom{10^{6}}{500000}}",
    "\\boxed{\\gcd(10^{10^{10^{10}}}, 2)}",
    "\\boxed{" + "{" * 60 + "7" + "}" * 60 + "}",  # deeply nested braces: exponential parsing
    "\\boxed{" + "(" * 60 + "7" + ")" * 60 + "}",
]


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(aime, "TIMEOUT_S", 1)


@pytest.mark.parametrize("text,why", HOSTILE)
def test_hostile_answer_is_wrong_with_its_reason(text, why):
    key, reason = answer_key(extract_answer(text))
    assert key is None and why in reason, reason


@pytest.mark.parametrize("text", SLOW)
def test_an_answer_past_the_timeout_is_killed_and_the_next_one_scored(text, short_timeout):
    key, why = answer_key(extract_answer(text))
    assert key is None and "math-verify: no verdict within 1 s" in why
    assert answer_key("2^{3}") == ("8", None)  # a fresh math-verify process


def test_a_math_verify_process_that_dies_fails_that_answer_only():
    slow = extract_answer(SLOW[0])
    answer_key("2^{3}")  # the process is up
    killer = threading.Timer(0.5, aime._VERIFIER.proc.send_signal, [signal.SIGKILL])
    killer.start()
    key, why = answer_key(slow)
    killer.join()
    assert key is None and f"its process died (exit {-signal.SIGKILL})" in why
    assert answer_key("\\frac{10^{3}}{2}") == ("500", None)


def test_a_math_verify_process_found_dead_on_writing_fails_that_answer_only(monkeypatch):
    answer_key("2^{3}")
    proc = aime._VERIFIER.proc
    proc.kill()
    proc.wait()
    monkeypatch.setattr(proc, "poll", lambda: None)  # as if it died just after being checked
    key, why = answer_key("3!")
    assert key is None and "its process died" in why
    assert answer_key("3!") == ("6", None)


@pytest.mark.parametrize(
    "answer,want",
    [
        ("2^{3}", "8"),
        ("\\frac{10^{3}}{2}", "500"),
        ("\\binom{10}{3}", "120"),
        ("\\sqrt{16}", "4"),
        ("3!", "6"),
        ("\\lfloor 1000\\sqrt{2} \\rfloor", "1414"),
        ("\\log_2 8", "3"),
        ("2.0", None),
        ("x + 1", None),
    ],
)
def test_small_expressions_are_evaluated_exactly(answer, want):
    key, why = answer_key(answer)
    assert key == want and (why is None) == (want is not None)


def test_scoring_from_other_threads_gives_the_same_verdicts(short_timeout):
    answers = [extract_answer(t) for t, _ in HOSTILE[:4]] + ["2^{3}", extract_answer(SLOW[0])]
    want = [answer_key(a) for a in answers]
    got = [None] * 2

    def run(i):
        got[i] = [answer_key(a) for a in answers]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == [want, want]
    assert want[4] == ("8", None) and "no verdict within 1 s" in want[5][1]


def test_evals_score_exits_0_and_records_every_reason(tmp_path):
    completions = [t for t, _ in HOSTILE] + [SLOW[0], "\\boxed{55}"]
    samples = tmp_path / "aime24.jsonl"
    write_samples(samples, [{"id": 0, "completions": completions}])
    out = tmp_path / "aime24.json"
    argv = ["score", "--benchmark", "aime24", "--samples", samples, "--output", out]
    argv += ["--source", "fixture", "--subset"]
    done = subprocess.run(
        [sys.executable, "-m", "evals", *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    item = json.loads(out.read_text())["items"][0]
    assert item["correct"] == [False] * (len(HOSTILE) + 1) + [True]
    for (_, why), got in zip(HOSTILE, item["errors"], strict=False):
        assert why in got, got
    assert f"no verdict within {aime.TIMEOUT_S} s" in item["errors"][-2]
    assert item["errors"][-1] is None


# --- YAML --------------------------------------------------------------------------------------


def bomb(depth: int, mapping: bool = False) -> str:
    """Nested aliases: each level holds ten aliases of the one below (10**depth values)."""
    lines = ["l0: &l0 [lol]"]
    for i in range(1, depth + 1):
        refs = [f"k{j}: *l{i - 1}" if mapping else f"*l{i - 1}" for j in range(10)]
        body = ", ".join(refs)
        lines.append(f"l{i}: &l{i} " + (f"{{{body}}}" if mapping else f"[{body}]"))
    return "\n".join(lines) + "\n"


BAD_YAML = [  # (file content, part of the message)
    *[(bomb(d), f"more than {MAX_NODES} values") for d in (5, 9, 30)],
    (bomb(12, mapping=True), f"more than {MAX_NODES} values"),
    ("a: &a [1, *a]\n", "an alias inside its own anchor"),
    ("x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"deeper than {MAX_DEPTH}"),
    ("#" * (MAX_BYTES + 1), "larger than 4 MiB"),
    ("method: [ties\n", "is not valid YAML"),
]


@pytest.fixture(
    params=BAD_YAML,
    ids=["bomb5", "bomb9", "bomb30", "map-bomb", "recursive", "deep", "oversized", "syntax"],
)
def bad_yaml(request, tmp_path):
    content, match = request.param
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    return path, match


def test_merges_run_refuses_a_bad_spec_file_in_one_line(bad_yaml, capsys):
    from merges.cli import main

    path, match = bad_yaml
    old = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["run", "--spec", str(path)])
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: spec file {path}"), err
    assert match in err, err


def test_python_m_merges_run_exits_2_on_an_alias_bomb(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(bomb(30))
    done = subprocess.run(
        [sys.executable, "-m", "merges", "run", "--spec", str(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: spec file {spec} has more than {MAX_NODES} values, each alias (*name) counted "
        "at its full size: the limit for a YAML input (mergeeval.yamlio.MAX_NODES); write the "
        "values out or use fewer nested aliases"
    ]


def test_mergekit_config_refuses(bad_yaml):
    path, match = bad_yaml
    with pytest.raises(MergeInputError, match=f"^mergekit config {re.escape(str(path))} .*{match}"):
        read_yaml(path)


def test_suite_and_benchmark_definitions_refuse(bad_yaml):
    path, match = bad_yaml
    with pytest.raises(EvalInputError, match=f"^suite file {re.escape(str(path))} .*{match}"):
        registry.get_suite(str(path))
    where = re.escape(str(path))
    with pytest.raises(EvalInputError, match=f"^benchmark definition {where} .*{match}"):
        registry._load(path.parent, "benchmark", registry.Benchmark)


def test_own_yaml_files_load_as_before():
    files = [
        *ROOT.glob("config/*.yaml"),
        *ROOT.glob("config/mergekit/*.yml"),
        *ROOT.glob("evals/benchmarks/*.yaml"),
        *ROOT.glob("evals/suites/*.yaml"),
        ROOT / "workflow/schemas/config.schema.yaml",
    ]
    assert len(files) > 10
    for f in files:
        assert load_yaml(f, "file") == yaml.safe_load(f.read_text()), f
    assert read_yaml(ROOT / "config/mergekit/ties.yml")["merge_method"] == "ties"
    assert registry.get_suite(str(ROOT / "evals/suites/demo.yaml")).benchmarks
    assert "aime24" in registry._load(ROOT / "evals/benchmarks", "benchmark", registry.Benchmark)


@pytest.mark.parametrize("depth", [5, 9, 30])
@pytest.mark.parametrize("mapping", [False, True])
def test_run_config_from_snakemake_is_refused_before_validation(depth, mapping):
    config = yaml.load(bomb(depth, mapping), Loader=yaml.FullLoader)  # as Snakemake's yte reads it
    want = rf"^config error at \(top level\): the run config has more than {MAX_NODES} values"
    with pytest.raises(ConfigError, match=want):
        load_config(config)


def test_recursive_loaded_config_is_refused_and_a_normal_one_loads():
    looped: list = []
    looped.append(looped)
    with pytest.raises(InputError, match=f"more than {MAX_NODES} values"):
        check_loaded({"a": looped}, "the run config")
    config = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    assert load_config(config)["models"]["experts"] == config["models"]["experts"]
