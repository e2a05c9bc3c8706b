"""The Snakemake DAG: config validation, the Table 1 dry run, and the demo end to end
(interrupted and resumed, then regression mode) in a copy of the repository."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(
    os.environ,
    HF_HUB_OFFLINE="1",
    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
)


def snakemake(*args, cwd=ROOT, **kw):
    cmd = [str(Path(sys.executable).parent / "snakemake"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, **kw)


def repo_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def test_table1_dry_run_lists_every_stage():
    r = snakemake("-n", "--configfile", "config/table1.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert counts["download_model"] == 4 and counts["merge_model"] == 12
    assert (
        counts["generate_samples"] == 16  # a job per model folder: base, 3 experts, 12 merges
        and counts["score_samples"] == 16
        and counts["report_table"] == 1
    )
    # the authors' RegMean statistics (the base over every expert's prompts) and the per-expert
    # variant's are separate jobs; each RegMean row reads its own
    assert counts["collect_stats"] == 6 and counts["download_prompts"] == 6
    for recipe in ("authors", "per_expert"):
        for e in ("math", "code", "if"):
            assert f"results/table1/stats/{recipe}/{e}" in out
    for merge in (
        "task_arithmetic",
        "average",
        "iso_c",
        "tsv",
        "regmean",
        "actmat",
        "regmean_masked",
        "actmat_fp64",
        "ties",
        "dare",
        "iso_cts",
        "ace",
    ):
        assert f"results/table1/models/{merge}" in out
    assert "allenai--Olmo-3-7B-RL-Zero-IF/3cae007c5324a9a06ee6780f03b848bc7b8fd440" in out


def test_table1_with_more_methods_adds_rows_only():
    """The overlay adds merge rows to the same run: the paper's rows and inputs are unchanged."""
    more = yaml.safe_load((ROOT / "config/table1_more_methods.yaml").read_text())["merges"]
    r = snakemake("-n", "--configfile", "config/table1.yaml", "config/table1_more_methods.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    counts = job_counts(out)
    assert counts["merge_model"] == 12 + len(more) and counts["download_model"] == 4
    assert counts["generate_samples"] == 16 + len(more)
    for merge in ("task_arithmetic", "regmean", *more):
        assert f"results/table1/models/{merge}" in out


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[
        -3000:
    ]


@pytest.mark.parametrize(
    "edit,key",
    [
        (
            lambda c: c["merges"]["ties"].update(method="magic"),
            "merges.ties: unknown method 'magic'",
        ),
        (
            lambda c: c["merges"]["ties"].update(params={"lambda": 1}),
            "merges.ties: method 'ties' has no parameter 'lambda'",
        ),
        (lambda c: c["models"].update(source="hub"), "models.base.repo_id"),
        (lambda c: c["eval"].update(suite="mmlu"), "eval.suite: unknown suite 'mmlu'"),
        (lambda c: c["stats"]["prompts"].pop("code"), "stats.prompts.code"),
        (lambda c: c.update(colour="red"), "colour"),
        (
            lambda c: c["merges"]["task_arithmetic"].update(params={"scale": float("nan")}),
            "merges.task_arithmetic: bad parameter",
        ),
        (lambda c: c["eval"].update(env={"A B": "1"}), "eval.env.A B"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, key):
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "--configfile", path)
    assert r.returncode != 0 and key in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert "Job stats" not in r.stdout + r.stderr


def test_the_same_hub_expert_twice_is_a_config_error(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/table1.yaml").read_text())
    cfg["models"]["experts"]["code"] = dict(cfg["models"]["experts"]["math"])
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", "--configfile", tmp_path / "cfg.yaml")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "models.experts.code: the same model as" in out, out[-2000:]


def test_rule_commands_quote_config_values(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["eval"]["env"] = {"NOTE": "a b; touch pwned"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", "-p", "--forceall", "--configfile", tmp_path / "cfg.yaml")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert "env 'NOTE=a b; touch pwned' python -m evals generate" in out
    assert "pwned" not in out.replace("'NOTE=a b; touch pwned'", "")


def test_unknown_benchmark_fails_before_any_job(tmp_path):
    suite = yaml.safe_load((ROOT / "evals/suites/demo.yaml").read_text())
    suite["benchmarks"]["gsm8k"] = {}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["eval"]["suite"] = str(tmp_path / "suite.yaml")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "--configfile", tmp_path / "cfg.yaml")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "eval.suite" in out and "unknown benchmark 'gsm8k'" in out, out[
        -2000:
    ]


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.json")}


SMOKE = ("--configfile", "config/smoke.yaml")
PER_JOB = 2  # eval.models_per_job of the smoke DAG test


def job_counts(out: str) -> dict:
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


def scheduled_merges(out: str, run: str) -> set:
    prefix = f"results/{run}/models/"
    return {
        line.split(prefix, 1)[1].split(",")[0].strip()
        for line in out.splitlines()
        if line.strip().startswith("output:") and prefix in line and "verified" not in line
    }


@pytest.mark.slow
def test_smoke_dag_interrupted_resumed_and_regression(tmp_path):
    repo = repo_copy(tmp_path / "repo")
    # two model folders per generation and scoring job: 7 engine starts instead of 14
    smoke = yaml.safe_load((repo / "config/smoke.yaml").read_text())
    smoke["eval"]["models_per_job"] = PER_JOB
    (repo / "config/smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    folders = ["base", *smoke["models"]["experts"], *smoke["merges"]]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "snakemake"), "--cores", "2", *SMOKE],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # a scoring job's manifest is written last, so its score files are done; the newest manifest may
    # belong to a job Snakemake has not registered as finished yet, so wait for three: at least two
    # finished jobs, each with at least one score file
    scored = repo / "results/smoke/batches/score"
    deadline = time.time() + 1500
    while time.time() < deadline and len(list(scored.glob("*.json"))) < 3:
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Snakemake and its running jobs, mid-run
    proc.wait(timeout=300)
    done = _mtimes(repo / "results/smoke")
    assert len([p for p in done if "scores" in p.parts]) >= 2
    # a job cut off between writing its output and being registered as finished is incomplete and
    # rightly rerun; every other finished output must stay untouched
    plan = snakemake("-n", "--cores", "2", *SMOKE, cwd=repo)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    again = {
        (repo / f.strip()).resolve()
        for line in (plan.stdout + plan.stderr).splitlines()
        if line.strip().startswith("output:")
        for f in line.split(":", 1)[1].split(",")
    }
    # a rescheduled scoring job rewrites every score file it lists; a rescheduled generation job
    # reuses its finished samples, so those must stay untouched too
    for out in list(again):
        if out.parent.name == "score" and out.parent.parent.name == "batches":
            request = repo / "results/smoke/requests/score" / out.name
            again |= {
                (repo / s["output"]).resolve() for s in json.loads(request.read_text())["scores"]
            }
    done = {
        p: t
        for p, t in done.items()
        if p.resolve() not in again and p.parent.resolve() not in again
    }
    assert len([p for p in done if "scores" in p.parts]) >= 2
    r = snakemake("--cores", "2", *SMOKE, cwd=repo, timeout=2400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items() if p.exists()), (
        "finished outputs were redone"
    )
    assert not list((repo / "results").rglob(".*partial*"))

    table = repo / "results/smoke/table1"
    for ext in ("md", "csv", "json", "png"):
        assert table.with_suffix(f".{ext}").stat().st_size > 0
    rows = list(csv.reader(table.with_suffix(".csv").open()))
    assert rows[0] == [
        "model",
        "humaneval",
        "humanevalplus",
        "aime24",
        "aime25",
        "ifeval",
        "average",
    ]
    names = [r[0] for r in rows[1:]]
    assert names[:2] == ["zero_shot", "expert"] and len(names) == 12 and "actmat" in names
    assert all(0.0 <= float(x) <= 100.0 for r in rows[1:] for x in r[1:])
    record = json.loads(table.with_suffix(".json").read_text())
    assert record["template_policy"] == "paper" and record["suite"] == "smoke"

    # regression mode: touching a file reruns exactly the merges whose code imports it (read off
    # the sources by hand here), their generations and scores, and the report
    for touched, merges in [
        ("merges/methods/tsv.py", {"tsv"}),
        ("merges/linalg.py", {"tsv", "iso_c", "iso_cts", "actmat", "regmean", "ace"}),
        ("merges/methods/ties.py", {"ties", "dare"}),
        ("merges/io.py", set(yaml.safe_load((repo / "config/smoke.yaml").read_text())["merges"])),
    ]:
        (repo / touched).touch()
        r = snakemake("-n", "--cores", "2", *SMOKE, cwd=repo)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        jobs = job_counts(out)
        assert scheduled_merges(out, "smoke") == merges, touched
        batches = {folders.index(m) // PER_JOB for m in merges}  # the jobs that hold them
        assert jobs.get("generate_samples") == len(batches)
        assert jobs.get("score_samples") == len(batches) and jobs.get("report_table") == 1
        assert "collect_stats" not in jobs and "verify_models" not in jobs
        snakemake("--touch", "--cores", "1", *SMOKE, cwd=repo, check=True)

    # a baseline table marks cells that moved beyond the noise band
    base = tmp_path / "baseline.csv"
    lines = table.with_suffix(".csv").read_text().splitlines()
    first = lines[1].split(",")
    first[1] = f"{float(first[1]) + 5:.1f}"
    base.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "evals",
            "report",
            "--output",
            tmp_path / "cmp",
            "--suite",
            "smoke",
            "--template",
            "paper",
            "--baseline",
            base,
            *[
                a
                for c in record["scores"]
                for b, p in record["scores"][c].items()
                for a in ("--cell", f"{c},{b},{p}")
            ],
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert ["zero_shot", "humaneval", -5.0] in cmp["moved"]
    assert "**moved -5.0**" in (tmp_path / "cmp.md").read_text()
