"""Hostile run configs are refused at plan time, before any job: names that would leave results/
(or hide in it), sweep values that would break a point's folder name, plans too large to be meant
(refused before anything is expanded), and output folders that cannot be written (one error, not
a job's traceback)."""

from __future__ import annotations

import copy
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from mergeeval.errors import InputError
from pipeline import preflight
from pipeline.config import ConfigError, load
from pipeline.guards import NAME_MAX, check_component, check_inside
from pipeline.plan import Plan
from pipeline.preflight import check_writable
from pipeline.sweeps import SweepError, count_points, expand

ROOT = Path(__file__).resolve().parents[1]
EXPERTS = {"math": {}, "code": {}, "if": {}}
REFUSED_NAMES = [".", "..", "...", ".hidden", "../up", "a/b", "a\nb", "a\0b", "x" * 101]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths are relative to the repository, as under Snakemake


def smoke(**over) -> dict:
    return yaml.safe_load((ROOT / "config/smoke.yaml").read_text()) | over


def hub(**over) -> dict:
    """A hub run (no network at plan time): a base, two experts and one RegMean merge on hub
    calibration prompts."""
    model = {"repo_id": "org/model", "revision": "a" * 40}
    prompts = {"hf_dataset": "org/prompts", "revision": "b" * 40}
    return {
        "run": "hubrun",
        "models": {
            "source": "hub",
            "base": dict(model, repo_id="org/base"),
            "experts": {"math": dict(model, repo_id="org/m"), "code": dict(model, repo_id="org/c")},
        },
        "merges": {"ta": {"method": "task_arithmetic"}, "rm": {"method": "regmean"}},
        "stats": {"prompts": {"math": dict(prompts), "code": dict(prompts)}},
        "eval": {"suite": "smoke"},
    } | over


def refused(config: dict, key: str) -> str:
    """The message of the one error a config's plan raises; it names `key` (or a key under it)."""
    with pytest.raises(InputError) as e:
        Plan(config)
    assert str(e.value).startswith(f"config error at {key}"), str(e.value)
    return str(e.value)


# --- 1. names that could leave results/ ---------------------------------------------------------


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_a_run_name_that_is_no_plain_folder_name_is_refused(name):
    refused(smoke(run=name), "run")


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_a_merge_id_that_is_no_plain_folder_name_is_refused(name):
    c = smoke()
    c["merges"][name] = {"method": "average"}
    msg = refused(c, "merges.")
    assert repr(name) in msg or name in msg


@pytest.mark.parametrize(
    "where,key",
    [
        (lambda c, n: c["models"]["experts"].update({n: {}}), "models.experts."),
        (lambda c, n: c["models"]["experts"]["math"].update(group=n), "models.experts.math.group"),
        (
            lambda c, n: c["models"]["experts"]["math"].update(domain=n),
            "models.experts.math.domain",
        ),
        (lambda c, n: c["stats"].update(recipes={n: {}}), "stats.recipes."),
    ],
    ids=["expert", "group", "domain", "stats_recipe"],
)
@pytest.mark.parametrize("name", ["..", ".", ".x", "a/../b"])
def test_other_names_that_become_folders_are_refused(where, key, name):
    c = smoke()
    where(c, name)
    refused(c, key)


def test_the_refusal_says_why_in_words():
    with pytest.raises(ConfigError) as e:
        load(smoke(run=".."))
    assert str(e.value) == (
        "config error at run: '..' cannot name a folder: letters, digits, '_', '-' and '.' only, "
        "and not starting with '.' (never '.', '..' or a hidden name)"
    )
    c = smoke()
    c["stats"]["recipes"] = {"../x": {}}
    with pytest.raises(ConfigError, match=r"^config error at stats\.recipes\.'\.\./x': '\.\./x'"):
        load(c)
    c = smoke()
    c["merges"]["expert"] = {"method": "average"}
    with pytest.raises(ConfigError, match="merges.expert: 'expert' is a reserved name"):
        load(c)


@pytest.mark.parametrize("name", ["a", "ties.v2", "my-run_1", "0", "a..b", "trailing."])
def test_plain_names_still_plan(name):
    c = smoke(run=name)
    c["merges"] = {name: {"method": "average"}}
    plan = Plan(c)
    assert plan.merge_dir(name) == f"results/{name}/models/{name}"


@pytest.mark.parametrize(
    "field,value,key",
    [
        ("revision", "../../../../tmp/x", "models.experts.math.revision"),
        ("revision", "main/../../..", "models.experts.math.revision"),
        ("repo_id", "..", "models.experts.math.repo_id"),
        ("repo_id", "org/a\nb", "models.experts.math.repo_id"),
    ],
)
def test_a_hub_download_folder_stays_under_resources_hub(field, value, key):
    c = hub()
    c["models"]["experts"]["math"][field] = value
    refused(c, key)


@pytest.mark.parametrize(
    "field,value,key",
    [
        ("split", "../../../../x", "stats.prompts.code.split"),
        ("split", "a/b", "stats.prompts.code.split"),
        ("revision", "../..", "stats.prompts.code.revision"),
        ("hf_dataset", "..", "stats.prompts.code.hf_dataset"),
    ],
)
def test_a_calibration_download_stays_under_resources_calibration(field, value, key):
    c = hub()
    c["stats"]["prompts"]["code"][field] = value
    refused(c, key)


def test_local_prompts_beside_a_hub_dataset_are_an_input_anywhere():
    c = hub()
    c["stats"]["prompts"]["code"]["file"] = str(ROOT / "config/demo_calibration_prompts.jsonl")
    c["stats"]["prompts"]["code"]["split"] = "../x"  # unused: the file is read
    assert Plan(c).prompts_file("code", "per_expert").endswith("demo_calibration_prompts.jsonl")


def test_a_hub_branch_with_a_slash_still_plans():
    c = hub()
    c["models"]["experts"]["math"]["revision"] = "refs/pr/1"
    assert Plan(c).model_dir("math") == "resources/hub/org--m/refs/pr/1"


@pytest.mark.parametrize("config", ["demo", "smoke", "table1"])
def test_every_planned_path_of_the_shipped_configs_stays_under_its_root(config):
    c = yaml.safe_load((ROOT / "config" / f"{config}.yaml").read_text())
    plan = Plan(c)
    paths = list(plan.planned_paths())
    assert len(paths) > 20
    roots = {root.split("/")[0] for _, root, _ in paths}
    assert roots <= {"results", "logs", "resources"}
    for path, root, _ in paths:
        assert path.startswith(root + "/") and ".." not in path.split("/")


@pytest.mark.parametrize(
    "path,root,reason",
    [
        ("results/r/models/../../../etc", "results/r", "'..' is no folder name"),
        ("results/r/models/./x", "results/r", "'.' is no folder name"),
        ("results/r/models//x", "results/r", "'' is no folder name"),
        ("results/r/models/a\0b", "results/r", "control character"),
        ("results/r/models/a\nb", "results/r", "control character"),
        ("results/r/models/a\\b", "results/r", "'/' or '\\'"),
        ("results/r/models/" + "x" * (NAME_MAX + 1), "results/r", f"at most {NAME_MAX}"),
        ("results/other/models/x", "results/r", "it is not under results/r/"),
        ("/etc/passwd", "results/r", "it is not under results/r/"),
    ],
)
def test_the_path_guard_names_the_key_and_the_reason(path, root, reason):
    with pytest.raises(ConfigError) as e:
        check_inside(path, root, "merges.m")
    assert str(e.value).startswith("config error at merges.m: the planned path")
    assert reason in str(e.value)
    check_inside("results/r/models/ties.density=0.2,scale=1.0", "results/r", "merges.m")
    check_component("ties.density=0.2", "merges.m")


# --- 1b. sweep point ids from grid values -------------------------------------------------------


def sweep_config(grid: dict, merges=None) -> dict:
    merges = merges or {"ties": {"method": "ties"}}
    return {"models": {"experts": EXPERTS}, "merges": merges, "sweeps": {"ties": {"grid": grid}}}


@pytest.mark.parametrize(
    "value,reason",
    [
        ("a/b", "'/'"),
        ("../../x", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a\0b", "'\\x00'"),
        ("a\nb", "'\\n'"),
        (".", "'.' is no folder name"),
        ("..", "'..' is no folder name"),
        ("a,b=c", "','"),
        ("x=y", "'='"),
    ],
)
def test_a_grid_value_that_would_break_a_point_folder_is_refused(value, reason):
    with pytest.raises(SweepError) as e:
        expand(sweep_config({"variant": ["official", value]}))
    msg = str(e.value)
    assert msg.startswith("config error at sweeps.ties.grid.variant: ")
    assert "cannot be part of a point id, which names the point's folder" in msg and reason in msg


@pytest.mark.parametrize(
    "key,values",
    [("density", [0.2, 0.2]), ("variant", ["official", "official"]), ("density", [1, "1"])],
)
def test_a_value_listed_twice_would_be_one_folder_and_is_refused(key, values):
    with pytest.raises(SweepError, match=f"sweeps.ties.grid.{key}: .* it is listed twice"):
        expand(sweep_config({key: values}))


def test_a_point_id_longer_than_a_file_name_is_refused():
    grid = {"variant": ["official"], "density": [0.1 + 1e-15 * i for i in range(1, 3)]}
    merges = {"t" * 180: {"method": "ties"}}
    c = sweep_config(grid, merges) | {"sweeps": {"t" * 180: {"grid": grid}}}
    with pytest.raises(
        SweepError, match=f"a point id would be 223 bytes long .* at most {NAME_MAX}"
    ):
        expand(c)


def test_point_ids_of_a_plain_grid_are_unchanged():
    points = expand(sweep_config({"density": [0.1, 0.2], "variant": ["official", "mergekit"]}))
    assert [p.id for p in points["ties"]] == [
        "ties.density=0.1,variant=official",
        "ties.density=0.1,variant=mergekit",
        "ties.density=0.2,variant=official",
        "ties.density=0.2,variant=mergekit",
    ]


# --- 2. a plan too large ------------------------------------------------------------------------


def _no_hang(seconds=60):
    """A hang would fail the test instead of stalling the suite (not a timing assertion)."""

    def fail(*_):
        raise TimeoutError(f"not refused within {seconds} s")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


def test_a_ten_to_the_ten_point_grid_is_refused_before_expanding():
    grid = {f"p{i}": list(range(10)) for i in range(10)}
    _no_hang()
    try:
        with pytest.raises(SweepError) as e:
            expand(sweep_config(grid))
    finally:
        signal.alarm(0)
    assert str(e.value) == (
        "config error at sweeps.ties.grid: 10000000000 points (10 p0 × 10 p1 × 10 p2 × 10 p3 × "
        "10 p4 × 10 p5 × 10 p6 × 10 p7 × 10 p8 × 10 p9); at most 200 (limits.max_sweep_points "
        "sets it)"
    )


def test_a_huge_grid_stops_the_whole_plan_with_one_error():
    c = smoke(sweeps={"ties": {"grid": {f"p{i}": list(range(10)) for i in range(10)}}})
    _no_hang()
    try:
        msg = refused(c, "sweeps.ties.grid")
    finally:
        signal.alarm(0)
    assert "10000000000 points" in msg and "limits.max_sweep_points" in msg


def test_the_cap_is_a_config_key_with_a_default():
    limits = load(smoke())["limits"]
    assert limits == {"max_sweep_points": 200, "max_merge_jobs": 1000}
    grid = {"density": [round(0.01 * i, 2) for i in range(1, 101)], "variant": ["official", "mergekit"]}  # fmt: skip
    assert count_points(sweep_config(grid)) == {"ties": 200}
    grid["scale"] = [0.5, 1.0]
    with pytest.raises(SweepError, match=r"400 points \(100 density × 2 variant × 2 scale\)"):
        count_points(sweep_config(grid))
    big = sweep_config(grid) | {"limits": {"max_sweep_points": 400}}
    assert len(expand(big)["ties"]) == 400
    c = smoke(sweeps={"ties": {"grid": grid}}, limits={"max_sweep_points": 400})
    assert len(Plan(c).point_ids) == 400


def test_a_sample_of_a_huge_grid_is_drawn_without_listing_it():
    grid = {f"p{i}": list(range(10)) for i in range(10)}
    c = sweep_config(grid)
    c["sweeps"]["ties"]["sample"] = {"n": 5, "seed": 3}
    assert count_points(c) == {"ties": 5}
    c["sweeps"]["ties"]["sample"]["n"] = 201
    with pytest.raises(SweepError, match=r"sweeps\.ties\.sample\.n: a sample of 201 points; at most 200"):  # fmt: skip
        count_points(c)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_sample_drawn_by_index_is_the_same_subset_as_before(seed):
    grid = {"density": [0.1, 0.2, 0.3, 0.4, 0.5], "scale": [0.5, 0.75, 1.0], "variant": ["official", "mergekit"]}  # fmt: skip
    c = sweep_config(grid)
    c["sweeps"]["ties"]["sample"] = {"n": 7, "seed": seed}
    combos = list(itertools.product(*grid.values()))  # the earlier implementation, listed
    picked = set(random.Random(seed).sample(range(len(combos)), 7))
    before = [c for i, c in enumerate(combos) if i in picked]
    assert [tuple(v for _, v in p.values) for p in expand(c)["ties"]] == before


def test_too_many_merge_jobs_in_all_are_refused():
    merges = {f"m{i}": {"method": "average"} for i in range(5)} | {"ties": {"method": "ties"}}
    c = sweep_config({"density": [0.1, 0.2, 0.3]}, merges) | {"limits": {"max_merge_jobs": 7}}
    with pytest.raises(SweepError) as e:
        expand(c)
    assert str(e.value) == (
        "config error at sweeps: 8 merge jobs (5 merges and 3 sweep points); at most 7 "
        "(limits.max_merge_jobs sets it)"
    )
    c = smoke(limits={"max_merge_jobs": 3})
    assert "config error at merges: 10 merge jobs (10 merges and 0 sweep points)" in refused(
        c, "merges"
    )


# --- 3. output folders that cannot be written ---------------------------------------------------


def test_a_missing_run_folder_is_fine_and_nothing_is_created(tmp_path):
    check_writable(tmp_path / "results" / "run")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone too


def test_a_run_folder_under_a_file_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results").write_text("not a folder")
    with pytest.raises(InputError) as e:
        check_writable(Path("results/run"), "the run's results")
    assert str(e.value) == (
        "cannot write the run's results to results/run: results is not a folder; remove it or "
        "give another run name"
    )


def test_a_broken_link_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results").mkdir()
    Path("results/run").symlink_to(tmp_path / "gone")
    with pytest.raises(InputError, match="results/run is a broken link"):
        check_writable(Path("results/run"))


@pytest.mark.parametrize("denied", ["results", "results/run", "results/run/models"])
def test_a_folder_this_user_may_not_write_is_one_error(tmp_path, monkeypatch, denied):
    """os.access as a non-root user answers it (root passes every mode bit: see the nobody test)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/run/models").mkdir(parents=True)
    if denied == "results":
        shutil.rmtree(tmp_path / "results/run")
    real = os.access
    monkeypatch.setattr(
        preflight.os, "access", lambda p, mode: real(p, mode) and Path(p) != tmp_path / denied
    )
    with pytest.raises(InputError) as e:
        check_writable(Path("results/run"), "the run's results")
    assert str(e.value) == (
        f"cannot write the run's results to results/run: {denied} is not writable by this user "
        f"(uid {os.getuid()}); give this user write access to it or run from a folder you can write"
    )


def test_a_read_only_mount_is_one_error(tmp_path, monkeypatch):
    """A read-only file system refuses root as well: the probe file says so."""

    def erofs(**_):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(preflight.tempfile, "mkstemp", erofs)
    with pytest.raises(InputError, match=r"refuses a new file \(Read-only file system\)"):
        check_writable(tmp_path / "results/run")


def test_the_plan_checks_results_and_logs_of_its_run(tmp_path, monkeypatch):
    plan = Plan(smoke(run="ro"))
    monkeypatch.chdir(tmp_path)
    plan.check_outputs()
    assert list(tmp_path.iterdir()) == []
    Path("logs").write_text("")
    with pytest.raises(InputError, match="^cannot write the run's logs to logs/ro: logs is not"):
        plan.check_outputs()


NOBODY = 65534


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become user nobody"
)
def test_as_a_non_root_user_a_read_only_results_folder_is_one_error():
    """The real thing: a results/RUN owned by root, mode 755, planned by user nobody."""
    top = Path(tempfile.mkdtemp(prefix="plan-limits-"))
    try:
        (top / "results/ro").mkdir(parents=True)
        (top / "mine").mkdir()
        for p in (top, top / "results", top / "results/ro"):
            p.chmod(0o755)
        os.chown(top / "mine", NOBODY, NOBODY)
        code = (
            "import os, sys\n"
            f"sys.path.insert(0, {str(ROOT)!r}); os.chdir({str(ROOT)!r})\n"
            "import yaml\n"
            "from mergeeval.errors import InputError\n"
            "from pipeline.plan import Plan\n"
            "c = yaml.safe_load(open('config/smoke.yaml')) | {'run': 'ro'}\n"
            "plan = Plan(c)\n"
            "for where in sys.argv[1:]:\n"
            "    os.chdir(where)\n"
            "    try:\n"
            "        plan.check_outputs(); print('ok', where)\n"
            "    except InputError as e:\n"
            "        print('error:', e)\n"
        )
        r = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", code, str(top), str(top / "mine")],
            capture_output=True, text=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
            cwd=top,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.splitlines() == [
            "error: cannot write the run's results to results/ro: results/ro is not writable by "
            f"this user (uid {NOBODY}); give this user write access to it or run from a folder "
            "you can write",
            f"ok {top / 'mine'}",
        ]
        assert list((top / "mine").iterdir()) == []
    finally:
        shutil.rmtree(top)


def test_snakemake_prints_one_error_line_for_an_unwritable_results_folder(tmp_path):
    """Through the DAG's own entry (workflow/rules/common.smk): one `error:` line, exit 2."""
    (tmp_path / "results").write_text("a file where the results folder goes")
    cfg = {
        "run": "ro",
        "models": {"source": "tiny", "base": {}, "experts": EXPERTS},
        "merges": {"ta": {"method": "task_arithmetic"}},
        "eval": {"suite": "smoke"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", ROOT / "Snakefile", "--directory", tmp_path,
         "--configfile", tmp_path / "cfg.yaml"],
        cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and errors == [
        "error: cannot write the run's results to results/ro: results is not a folder; remove it "
        "or give another run name"
    ], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_configs_are_left_as_given():
    c = smoke(sweeps={"ties": {"grid": {"density": [0.2, 0.4]}}})
    before = copy.deepcopy(c)
    Plan(c)
    assert c == before
