"""The demo as a regression check: the trained family's DAG reproduces the committed expected
table, a method broken on purpose moves its own rows and no other, and undoing the break gives
back the identical table (the rerun branch is deterministic)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evals.report import read_table
from pipeline.plan import Plan
from tests.test_lock import assert_records_match_lock, in_setup_venv
from tests.test_sweeps import assert_points_met_validation_only
from tests.test_workflow import ENV, job_counts, repo_copy, scheduled_merges, snakemake

EXPECTED = Path("config/demo_expected")
BROKEN = ("return p.scale * task.deltas.sum(0)", "return -p.scale * task.deltas.sum(0)")


def compare(repo: Path, table: Path, baseline: Path, band: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "evals", "compare", table, baseline, "--noise-band", band]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=ENV)


DOMAIN = {"humaneval": "code", "humanevalplus": "code", "aime24": "math", "aime25": "math",
          "ifeval": "if"}  # fmt: skip


def test_the_expected_table_separates_methods_on_every_column():
    """The committed expected table can see a merge bug in every column: across the merge rows
    (per_task policy) each column spreads at least 10 points and at most a third of the merges
    sit at its ceiling, and each expert beats the base by at least 30 points on its own domain."""
    table = read_table(EXPECTED / "table1.csv")
    merges = [r for r in yaml.safe_load(Path("config/demo.yaml").read_text())["merges"]]
    for column, domain in DOMAIN.items():
        values = [table[m][column] for m in merges]
        assert max(values) - min(values) >= 10, column
        assert sum(v == 100.0 for v in values) <= len(merges) / 3, (column, sorted(values))
        assert table["expert"][column] - table["zero_shot"][column] >= 30, (column, domain)


@pytest.mark.slow
def test_a_broken_method_moves_only_its_own_rows(tmp_path):
    repo = repo_copy(tmp_path / "repo")
    cfg = yaml.safe_load((repo / "config/demo.yaml").read_text())
    sweeps = cfg["sweeps"]
    points = [p for m in sweeps for p in Plan(cfg).points[m]]
    # the plan: one merge job per sweep point (the swept merges themselves are copies of their
    # selected point), validation-only generation for the points, test generation for the rows
    plan = snakemake("-n", "--cores", "2", cwd=repo)
    jobs = job_counts(plan.stdout + plan.stderr)
    assert jobs["merge_model"] == len(cfg["merges"]) - len(sweeps) + len(points) == 48, jobs
    assert jobs["selected_merge"] == jobs["select_point"] == len(sweeps) == 3, jobs
    r = snakemake("--cores", "2", cwd=repo, timeout=3600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    results = repo / "results/demo"
    requests = {
        f.stem: {Path(t["output"]).name for t in json.loads(f.read_text())["targets"]}
        for f in (results / "requests/generate").glob("*.json")
    }
    val = set().union(*(v for k, v in requests.items() if k.startswith("val")))
    test = set().union(*(v for k, v in requests.items() if not k.startswith("val")))
    assert val == {p.id for p in points} and not val & test and set(sweeps) <= test
    assert jobs["generate_samples"] == jobs["score_samples"] == len(requests), jobs
    # no test item ever met a point; each swept row is its selected point's folder
    assert_points_met_validation_only(results, sweeps, "demo_dev", "demo")
    md = (results / "table1.md").read_text()
    assert "## Sweeps: parameters selected on validation" in md
    for m in sweeps:
        selection = json.loads((results / f"sweeps/{m}.json").read_text())
        chosen = ", ".join(f"{k} = {v}" for k, v in selection["values"].items())
        assert f"| {m} | {chosen} |" in md and (results / f"sweeps/{m}.png").stat().st_size > 1000
    table = repo / "results/demo/table1.csv"
    # the committed expected table: identical on this kind of machine; another CPU may flip a
    # near-tie greedy token here and there, so a few cells beyond their band are tolerated here
    # (scripts/demo.sh lists and fails on every one)
    ok = compare(repo, table, EXPECTED / "table1.csv", str(EXPECTED / "band.csv"))
    assert ok.returncode == 0 or len(ok.stdout.splitlines()) <= 4, ok.stdout + ok.stderr
    first = table.read_bytes()
    # the same tree: every merge's fingerprint matches the committed one within its tolerance
    record = json.loads((repo / "results/demo/table1.json").read_text())
    statuses = {m: r["status"] for m, r in record["fingerprints"]["merges"].items()}
    assert set(statuses.values()) <= {"identical", "bits"}, statuses
    # every merge.json, statistics file, generation meta and score file records the lock's versions
    if in_setup_venv():
        assert assert_records_match_lock(repo / "results/demo") > 100
    baseline = tmp_path / "baseline.csv"
    baseline.write_bytes(first)

    # break task arithmetic in the copy (a sign-flipped task vector); nothing tracked is edited
    method = repo / "merges/methods/task_arithmetic.py"
    source = method.read_text()
    assert BROKEN[0] in source
    method.write_text(source.replace(*BROKEN))
    fingerprints = tmp_path / "fingerprints.json"
    shutil.copy(repo / "results/demo/fingerprints.json", fingerprints)
    cfg["report"] = {
        "baseline": str(baseline),
        "noise_band": str(EXPECTED / "band.csv"),
        "baseline_fingerprints": str(fingerprints),
    }
    regress = repo / "config/demo-regression.yaml"
    regress.write_text(yaml.safe_dump(cfg, sort_keys=False))  # key order is the experts' order

    plan = snakemake("-n", "--cores", "2", "--configfile", regress, cwd=repo)
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    jobs = job_counts(out)
    ta_points = {p.id for p in points if p.merge == "task_arithmetic"}
    # the merges of the method: the swept row and the adapted-experts block's two (one written
    # as an adapter); every other merge stays
    ta_rows = {m for m, e in cfg["merges"].items() if e.get("method") == "task_arithmetic"}
    assert ta_rows == {"task_arithmetic", "lora_task_arithmetic", "lora_ta_adapter"}
    # KnOTS reuses Task Arithmetic's function (its merge: ta), so its merges rerun too; with
    # merge: ties and iso_c their weights come out identical (generated again: merge.json, part
    # of a folder's identity, records the code that made it)
    knots = {m for m, e in cfg["merges"].items() if e.get("method") == "knots"}
    assert knots == {"lora_knots_ties", "lora_knots_iso_c"}
    assert scheduled_merges(out, "demo") == ta_rows | ta_points | knots
    # the test batches that hold them and the validation batch of the points
    held = [k for k, v in requests.items() if v & (ta_rows | ta_points)]
    assert jobs["generate_samples"] == jobs["score_samples"] == len(held) == 3, (jobs, held)
    assert "collect_stats" not in jobs
    # a new baseline reruns the fingerprint check (cheap) of every merge job and of the broken
    # swept row, never a generation beyond the batch (the other swept rows, copies of their points
    # whose checks rerun, keep their earlier check: a known gap, see the issue notes)
    assert jobs["check_fingerprint"] == len(cfg["merges"]) - len(sweeps) + len(points) + 1

    r = snakemake("--cores", "2", "--configfile", regress, cwd=repo, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # the broken merge is named with its tensors right after it is written, before its generation
    assert "task_arithmetic: MOVED" in r.stdout + r.stderr
    check = json.loads((repo / "results/demo/fingerprints/task_arithmetic.json").read_text())
    assert check["comparison"]["status"] == "moved"
    # a sign flip, and with it another selected scale: every tensor far beyond the tolerance
    assert min(check["comparison"]["moved"].values()) > 10 * check["comparison"]["tolerance"]
    gen = next(  # the test batch that holds the row (val* batches hold the points)
        p
        for p in (repo / "results/demo/batches/generate").glob("batch*.json")
        if '/task_arithmetic"' in p.read_text()
    )
    fp_file = repo / "results/demo/fingerprints/task_arithmetic.json"
    assert fp_file.stat().st_mtime < gen.stat().st_mtime

    # inside that job only task_arithmetic's rows were generated again; its neighbours' samples
    # were reused (their request keys did not change)
    manifest = json.loads(gen.read_text())
    regenerated = {Path(t["output"]).name for t in manifest["targets"] if t["generated"]}
    assert regenerated == {"task_arithmetic", "task_arithmetic@paper"}, manifest
    assert len(manifest["targets"]) > 2
    lora = next(
        json.loads(p.read_text())
        for p in (repo / "results/demo/batches/generate").glob("batch*.json")
        if '/lora_task_arithmetic"' in p.read_text()
    )
    regenerated = {Path(t["output"]).name for t in lora["targets"] if t["generated"]}
    assert regenerated == {"lora_task_arithmetic", "lora_ta_adapter"} | knots, lora

    record = json.loads((repo / "results/demo/table1.json").read_text())
    weights = record["fingerprints"]["merges"]
    assert all(weights[m]["status"] == "moved" and weights[m]["scores_moved"] for m in ta_rows)
    assert all(w["status"] == "moved" and w["scores_moved"] is None for m, w in weights.items()
               if m in ta_points)  # fmt: skip
    assert all(
        w["status"] == "identical"
        for m, w in weights.items()
        if m not in ta_rows and m not in ta_points
    )
    moved_rows = {row for row, _, _ in record["moved"]}
    assert moved_rows == ta_rows | {"task_arithmetic@paper"}, record["moved"]
    md = (repo / "results/demo/table1.md").read_text()
    for line in md.split("## Sweeps")[0].splitlines():  # the score tables
        if line.startswith("| "):
            row = line.split("|")[1].strip()
            assert ("**moved" in line) == (row in moved_rows), line
    assert (
        re.search(r"- \*\*task_arithmetic\*\*: \d+ tensors moved", md)
        and "its scores moved too" in md
    )
    said = compare(repo, table, baseline, str(EXPECTED / "band.csv"))
    assert said.returncode == 1 and "task_arithmetic" in said.stdout
    assert {line.split(":")[0].split()[0] for line in said.stdout.splitlines()[1:]} == moved_rows, (
        said.stdout
    )
    assert read_table(table)["average"] == read_table(baseline)["average"]

    # undo the break: the branch reruns and the table comes back byte for byte
    method.write_text(source)
    r = snakemake("--cores", "2", "--configfile", regress, cwd=repo, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert table.read_bytes() == first
