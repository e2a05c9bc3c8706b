"""The demo DAG (reduced, every stage) through `snakemake --executor slurm` on a real slurmctld.

The cluster is the single-node one of scripts/slurm-local.sh (.ci/run starts it). Without one the
test is skipped with the reason, unless MERGEEVAL_REQUIRE_SLURM=1 (set by CI), where it fails.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_workflow import ENV, repo_copy

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def cluster_up() -> str | None:
    """None when a SLURM node answers, else why not."""
    if not shutil.which("sinfo"):
        return "no SLURM client (sinfo); start one with `sudo scripts/slurm-local.sh start`"
    r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0 or not re.search(r"idle|mixed|allocated", r.stdout):
        return f"no idle SLURM node (sinfo: {r.stdout.strip() or r.stderr.strip()}); run `sudo scripts/slurm-local.sh start`"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = cluster_up()
    if why:
        if os.environ.get("MERGEEVAL_REQUIRE_SLURM") == "1":
            pytest.fail(f"MERGEEVAL_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


def reduced_config(path: Path) -> Path:
    """The demo with one data-dependent merge (so statistics run too) and 2 items per benchmark."""
    cfg = yaml.safe_load((path / "config/demo.yaml").read_text())
    cfg["run"] = "slurm"
    experts = cfg["models"]["experts"]  # the full experts (the adapted-experts block left out)
    cfg["models"]["experts"] = {e: m for e, m in experts.items() if not m.get("group")}
    cfg["merges"] = {"regmean": {"method": "regmean"}}
    cfg.pop("sweeps", None)
    cfg["eval"]["limit"] = 2
    cfg["eval"]["threads"] = 1
    cfg["eval"].pop("compare_template", None)
    out = path / "config/slurm-test.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def run_dag(repo: Path, cfg: Path, **kw):
    cmd = [SNAKEMAKE, "--profile", "workflow/profiles/slurm-local", "--configfile", str(cfg)]
    return subprocess.Popen(
        cmd,
        cwd=repo,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def squeue_jobs(name_part: str) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i %j %k"], capture_output=True, text=True)
    return [line.split()[0] for line in r.stdout.splitlines() if name_part in line]


@pytest.mark.slow
def test_demo_dag_on_slurm_with_a_cancelled_job(cluster, tmp_path):
    repo = repo_copy(tmp_path / "repo")
    cfg = reduced_config(repo)

    # first run: cancel a generation job once it is running; the DAG must stop with an error
    proc = run_dag(repo, cfg)
    cancelled, deadline = None, time.time() + 900
    while time.time() < deadline and proc.poll() is None and not cancelled:
        running = [j for j in squeue_jobs("generate_samples")]
        if running and list((repo / "results/slurm/samples").glob("*/generation.json")):
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(2)
    first_log, _ = proc.communicate(timeout=900)
    assert cancelled, f"no generation job seen to cancel:\n{first_log[-3000:]}"
    assert proc.returncode != 0, first_log[-3000:]
    done = {p: p.stat().st_mtime_ns for p in (repo / "results/slurm").rglob("*.json")}
    assert not list((repo / "results").rglob(".*partial*"))

    # second run completes without redoing what finished
    proc = run_dag(repo, cfg)
    log, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, log[-4000:]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items() if p.exists()), (
        "finished outputs were redone"
    )

    table = json.loads((repo / "results/slurm/table1.json").read_text())
    assert list(table["table"]) == ["zero_shot", "expert", "regmean"]
    # every job of the second run went through SLURM: one submission per job, each with a log
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    n_jobs = int(re.search(r"^total\s+(\d+)", log, re.M).group(1))
    # `all`, and writing a merge's spec file and a batch's request files
    local = re.findall(r"^localrule (\w+):", log, re.M)
    assert set(local) <= {"all", "merge_spec", "generate_request", "score_request"}, local
    assert "all" in local
    assert len(submitted) == n_jobs - len(local), log[-3000:]
    logs = list((repo / ".snakemake/slurm_logs").rglob("*.log"))
    assert {re.sub(r"\D", "", p.stem) for p in logs} >= set(submitted)
