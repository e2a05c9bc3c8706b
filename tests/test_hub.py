"""The first stage of the real job against a real hub server: olah serving offline git mirrors of the
Table 1 repos (tests/hubmirror.py, the `hub` fixture of conftest.py), reached by the product's own
commands through huggingface_hub and datasets, as on the hub.

Every artefact records the commit it was read at (source.json, the prompts' sidecar, benchmark
origins); an interrupted download resumes without fetching its finished files again (the proxy in
front of olah counts the requests); a wrong revision or repo is one `error:` line, exit 2, and
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from merges.io import Checkpoint
from tests.hubmirror import (
    AIME,
    DEMO_MODELS,
    DOLCI,
    IFEVAL,
    IFEVAL_LIKE,
    LORA,
    aime_rows,
    git,
    hub_env,
    parquet,
)
from tests.hubmirror import commit as git_commit

ROOT = Path(__file__).resolve().parents[1]
BASE, MATH = "allenai/Olmo-3-1025-7B", "allenai/Olmo-3-7B-RL-Zero-Math"
IF_EXPERT = "allenai/Olmo-3-7B-RL-Zero-IF"
CODE = "allenai/Olmo-3-7B-RL-Zero-Code"
STALLED = "model-00002-of-00002.safetensors"


@pytest.fixture
def env(hub, tmp_path):
    """A client of the test hub: its endpoint, a fresh HF_HOME; the request log emptied."""
    hub.proxy.reset()
    return hub_env(hub.url, tmp_path / "hf_home")


def run(env, *args, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m ARGS`, or `python -c CODE ARGS[1:]` (CODE runs the module ARGS[0] names)."""
    head = ["-c", code, *args[1:]] if code else ["-m", *args]
    return subprocess.run(
        [sys.executable, *map(str, head)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def download(env, repo_id, revision, output, code=None):
    return run(
        env, "merges", "download", "--repo-id", repo_id, "--revision", revision,
        "--output", output, code=code,
    )  # fmt: skip


def needed_files(hub, repo_id: str, commit: str = "main") -> set[str]:
    """What `merges download` fetches of a mirror model repo: all but README.md, .gitattributes."""
    return set(hub.mirror.files(repo_id, commit)) - {"README.md", ".gitattributes"}


def assert_files_of(hub, folder: Path, repo_id: str, commit: str) -> None:
    """`folder` holds exactly the repo's needed files at `commit`, byte for byte, and source.json."""
    expected = needed_files(hub, repo_id, commit)
    assert {"model-00001-of-00002.safetensors", STALLED, "config.json"} <= expected
    assert {p.name for p in folder.iterdir()} == expected | {"source.json"}
    for name in expected:
        assert (folder / name).read_bytes() == hub.mirror.file(repo_id, name, commit), name


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a failed command (no traceback)."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


def test_download_records_the_commit_it_got_pinned_or_at_main(hub, env, tmp_path):
    first, later = hub.mirror.commits[BASE]
    assert hub.mirror.main(BASE) == later != first
    r = download(env, BASE, first, tmp_path / "pinned")
    assert r.returncode == 0, r.stderr
    source = json.loads((tmp_path / "pinned" / "source.json").read_text())
    assert source == {"repo_id": BASE, "revision": first, "commit": first}
    assert json.loads(r.stdout) == source
    assert_files_of(hub, tmp_path / "pinned", BASE, first)
    got, demo = Checkpoint(tmp_path / "pinned"), Checkpoint(DEMO_MODELS / "base")
    assert sorted(got.names()) == sorted(demo.names())
    assert all(torch.equal(got.read(n), demo.read(n)) for n in demo.names())

    r = download(env, MATH, "main", tmp_path / "main")
    assert r.returncode == 0, r.stderr
    source = json.loads((tmp_path / "main" / "source.json").read_text())
    assert source == {"repo_id": MATH, "revision": "main", "commit": hub.mirror.main(MATH)}
    assert_files_of(hub, tmp_path / "main", MATH, hub.mirror.main(MATH))
    gen = json.loads((tmp_path / "main" / "generation_config.json").read_text())
    assert gen["temperature"] == 0.6  # main's file, not the first commit's
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or lock left


def test_download_prompts_records_the_dataset_commit(hub, env, tmp_path):
    repo = DOLCI["Math"]
    out = tmp_path / "prompts.jsonl"
    r = run(env, "merges", "download-prompts", "--dataset", repo, "--revision", "main",
            "--n", 5, "--select", "first", "--column", "prompt", "--output", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    commit = hub.mirror.main(repo)
    assert (meta["revision"], meta["commit"]) == ("main", commit)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [f"Math training prompt {i}: solve it." for i in range(5)]
    assert {r["source"]["commit"] for r in rows} == {commit}


def test_hub_benchmarks_record_repo_at_commit(hub, env, tmp_path):
    # AIME 2024 at the benchmark's own revision (main), scored: the score file names the commit
    samples = tmp_path / "aime.jsonl"
    answers = ["24", "25", "0"]  # the mirror's 2024 problems: (2024 + i) % 1000
    samples.write_text("".join(json.dumps({"id": i, "completions": [f"\\boxed{{{a}}}"]}) + "\n"
                               for i, a in enumerate(answers)))  # fmt: skip
    score = tmp_path / "aime.json"
    r = run(env, "evals", "score", "--benchmark", "aime24", "--samples", samples, "--output", score)
    assert r.returncode == 0, r.stderr
    result = json.loads(score.read_text())
    assert result["data"] == f"{AIME}@{hub.mirror.main(AIME)}"
    assert result["n_items_in_data"] == 3 and result["metrics"]["pass@1"] == pytest.approx(2 / 3)

    # IFEval at a pinned commit (the yaml pins the hub's, which the mirror cannot have)
    first = hub.mirror.commits[IFEVAL][0]
    code = (
        "import sys; from evals.registry import get_benchmark; from evals.data import load_items\n"
        "b = get_benchmark('ifeval'); b.source['revision'] = sys.argv[1]\n"
        "items, origin = load_items(b); print(len(items), origin)"
    )
    r = run(env, "load_items", first, code=code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6", f"{IFEVAL}@{first}"]


def test_the_table1_dev_sets_load_from_the_hub_at_their_commits(hub, env):
    """table1_dev's hub sets in their real layouts: AIME 2021-2023 (the year list) from the AIME
    dataset, and the `filtered` config of argilla/ifeval-like-data (a second config beside the
    default one, kwargs as JSON strings), each origin `repo@commit`."""
    code = (
        "import json; from evals.registry import get_benchmark; from evals.data import load_items\n"
        "out = {}\n"
        "for b in ('aime_dev', 'ifeval_like'):\n"
        "    items, origin = load_items(get_benchmark(b))\n"
        "    out[b] = [origin, [it.fields for it in items], [it.reference for it in items]]\n"
        "print(json.dumps(out))"
    )
    r = run(env, "load_items", code=code)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.splitlines()[-1])
    origin, fields, _ = out["aime_dev"]
    assert origin == f"{AIME}@{hub.mirror.main(AIME)}"
    want = [{"problem": x["problem"]} for x in aime_rows() if x["year"] in (2021, 2022, 2023)]
    assert fields == want and len(want) == 9
    origin, fields, refs = out["ifeval_like"]
    assert origin == f"{IFEVAL_LIKE}@{hub.mirror.main(IFEVAL_LIKE)}"
    assert [r["key"] for r in refs] == [70000 + i for i in range(5)]  # the filtered config's rows
    assert all(r["kwargs"] == [{}] for r in refs)


def test_scoring_reads_the_commit_the_samples_were_generated_at(hub, env, tmp_path):
    """main of the AIME dataset moves (other answers) between generation and scoring: the score
    reads the items at the commit the samples' meta names, as the run's revision lock does."""
    first = hub.mirror.main(AIME)
    samples = tmp_path / "aime.jsonl"
    samples.write_text("".join(json.dumps({"id": i, "completions": [f"\\boxed{{{a}}}"]}) + "\n"
                               for i, a in enumerate(["24", "25", "26"])))  # fmt: skip
    meta = {"data": f"{AIME}@{first}", "data_source": "hf"}
    (tmp_path / "aime.meta.json").write_text(json.dumps(meta))
    repo = hub.mirror.repo(AIME)
    moved = [r | {"answer": "999"} for r in aime_rows()]
    git_commit(repo, {"data/train-00000-of-00001.parquet": parquet(moved)}, "new answers",
               "2025-12-01T10:00:00+00:00")  # fmt: skip
    score = tmp_path / "aime.json"
    try:
        r = run(env, "evals", "score", "--benchmark", "aime24", "--samples", samples,
                "--output", score)  # fmt: skip
    finally:
        git(repo, "reset", "-q", "--hard", first)
    assert r.returncode == 0, r.stderr
    result = json.loads(score.read_text())
    assert result["data"] == f"{AIME}@{first}" and result["metrics"]["pass@1"] == 1.0


def kill_halfway(hub, env, repo_id: str, out: Path) -> list:
    """Start `merges download` of `repo_id` at main, hold the second shard at half until every
    other file has landed, then SIGKILL it; return the requests it made."""
    metadata = out.parent / f".{out.name}.download" / ".cache" / "huggingface" / "download"
    others = len(needed_files(hub, repo_id)) - 1
    hub.proxy.stall = STALLED  # served half, then held until the kill
    proc = subprocess.Popen(
        [sys.executable, "-m", "merges", "download", "--repo-id", repo_id, "--revision", "main",
         "--output", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        assert hub.proxy.stalled.wait(60), "the download never reached the stalled shard"
        while len(list(metadata.glob("*.metadata"))) < others:  # the other files have landed
            assert time.monotonic() < deadline, hub.proxy.gets()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # a hard kill: no cleanup runs
        proc.wait(30)
    finally:
        proc.kill()
        hub.proxy.release.set()
    while len(requests := hub.proxy.gets()) < others + 1:  # the held one is logged once dropped
        assert time.monotonic() < deadline, requests
        time.sleep(0.1)
    assert not out.exists() and out.parent.joinpath(f".{out.name}.download").is_dir()
    hub.proxy.reset()
    return requests


def test_a_hub_adapter_downloads_at_its_commit_and_merges(hub, env, tmp_path):
    """A PEFT adapter repo comes down like a model (its adapter files, source.json with the commit)
    and merges with the downloaded base as an expert, recorded as an adapter in merge.json."""
    (pinned,) = hub.mirror.commits[LORA]
    r = download(env, LORA, pinned, tmp_path / "lora")
    assert r.returncode == 0, r.stderr
    got = {p.name for p in (tmp_path / "lora").iterdir()}
    assert got == set(needed_files(hub, LORA, pinned)) | {"source.json"}
    assert "adapter_model.safetensors" in got
    source = json.loads((tmp_path / "lora" / "source.json").read_text())
    assert source == {"repo_id": LORA, "revision": pinned, "commit": pinned}
    base_commit = hub.mirror.commits[BASE][0]
    assert download(env, BASE, base_commit, tmp_path / "base").returncode == 0
    r = run(
        env, "merges", "run", "--method", "task_arithmetic", "--base", tmp_path / "base",
        "--expert", tmp_path / "lora", "--output", tmp_path / "merged", "--device", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    expert = record["experts"][0]
    assert expert["adapter"]["lora_modules"] == 28 and expert["commit"] == pinned


def test_interrupted_download_resumes_without_fetching_finished_files(hub, env, tmp_path):
    out = tmp_path / "models" / "base"
    first_run = kill_halfway(hub, env, BASE, out)
    finished = {Path(g.path).name for g in first_run if g.complete}
    assert finished == needed_files(hub, BASE) - {STALLED}  # nothing looked complete (above)

    r = download(env, BASE, "main", out)
    assert r.returncode == 0, r.stderr
    rerun = [(Path(g.path).name, g.sent, g.complete) for g in hub.proxy.gets()]
    # the cut-off shard again, whole (huggingface_hub 2.4 gives each process its own temporary
    # file), and none of the finished files
    assert rerun == [(STALLED, len(hub.mirror.file(BASE, STALLED)), True)]
    assert_files_of(hub, out, BASE, hub.mirror.main(BASE))
    assert sorted(p.name for p in out.parent.iterdir()) == ["base"]  # no staging or lock left


def test_a_moved_main_restarts_an_interrupted_download(hub, env, tmp_path):
    repo_id = "allenai/Olmo-3-7B-RL-Zero-Code"
    out = tmp_path / "code"
    kill_halfway(hub, env, repo_id, out)
    repo, before = hub.mirror.repo(repo_id), hub.mirror.main(repo_id)
    (repo / "chat_template.jinja").unlink()  # main moves on: a file the staging holds is gone
    moved = git_commit(repo, {}, "drop the chat template", "2025-12-01T10:00:00+00:00")
    try:
        r = download(env, repo_id, "main", out)
    finally:
        git(repo, "reset", "-q", "--hard", before)  # the mirror as the other tests know it
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "source.json").read_text())["commit"] == moved
    assert "chat_template.jinja" not in {p.name for p in out.iterdir()}
    assert {Path(g.path).name for g in hub.proxy.gets()} == needed_files(hub, repo_id, moved)


def test_transient_errors_are_retried(hub, env, tmp_path):
    hub.proxy.fail = {"model-00001-of-00002.safetensors": 1}  # one 503
    r = download(env, BASE, "main", tmp_path / "base")
    assert r.returncode == 0, r.stderr
    assert "503" in r.stderr and "trying again in" in r.stderr
    names = [Path(g.path).name for g in hub.proxy.gets() if g.complete and g.status == 200]
    assert sorted(names) == sorted(set(names))  # each file served whole once
    assert_files_of(hub, tmp_path / "base", BASE, hub.mirror.main(BASE))


@pytest.mark.parametrize(
    "command, what",
    [
        (["download", "--repo-id", BASE, "--revision", "no-such-branch"], "model " + BASE),
        (
            ["download", "--repo-id", "allenai/Olmo-3-404", "--revision", "main"],
            "allenai/Olmo-3-404",
        ),
        (["download-prompts", "--dataset", DOLCI["IF"], "--revision", "no-such-branch"], "dataset"),
        (["download-prompts", "--dataset", "allenai/Dolci-404", "--revision", "main"], "Dolci-404"),
    ],
)
def test_wrong_revision_or_repo_is_one_error_and_leaves_nothing(hub, env, tmp_path, command, what):
    out = tmp_path / "out" / "x"
    line = error_line(run(env, "merges", *command, "--output", out))
    assert what in line and "was not found on http://127.0.0.1" in line
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_offline_a_branch_cannot_be_resolved(hub, env, tmp_path):
    env = {**env, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "base"
    line = error_line(download(env, BASE, "main", out))
    assert "HF_HUB_OFFLINE is set" in line and not out.exists()


def test_the_table1_plan_locks_the_mirrors_commits_until_asked(hub, env, tmp_path):
    """Planning config/table1.yaml against the mirror writes the commits of its branches to
    results/table1/revisions.lock.yaml; a moved main changes nothing until update_lock=true; a
    wrong revision stops the plan with one error and leaves the lock as it was."""
    from mergeeval.yamlio import load_yaml
    from tests.test_workflow import repo_copy

    repo = repo_copy(tmp_path / "repo")
    lock_file = repo / "results/table1/revisions.lock.yaml"
    smk = [str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile"]
    (repo / "mirror.yaml").write_text(json.dumps(mirror_pins(hub)))

    def plan(config="config/table1.yaml", *extra):
        return subprocess.run([*smk, config, "mirror.yaml", *extra], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    code = "allenai/Olmo-3-7B-RL-Zero-Code"
    before = hub.mirror.main(code)
    r = plan()
    assert r.returncode == 0, r.stderr[-3000:]
    lock = load_yaml(lock_file, "lock")
    assert lock["models.experts.code"]["commit"] == before
    assert lock["benchmarks.aime24"]["commit"] == hub.mirror.main(AIME)
    assert lock["stats.prompts.math"]["commit"] == hub.mirror.main(DOLCI["Math"])
    assert f"resources/hub/allenai--Olmo-3-7B-RL-Zero-Code/{before}" in r.stdout
    assert r.stderr.count("is not pinned in the config") == 6

    repo_git = hub.mirror.repo(code)
    moved = git_commit(
        repo_git, {"NOTES.md": b"moved on\n"}, "main moves", "2025-12-02T10:00:00+00:00"
    )
    try:
        text = lock_file.read_text()
        r = plan()
        assert r.returncode == 0 and lock_file.read_text() == text
        assert moved not in r.stdout
        r = plan("config/table1.yaml", "--config", "update_lock=true")
        assert r.returncode == 0, r.stderr[-3000:]
        assert load_yaml(lock_file, "lock")["models.experts.code"]["commit"] == moved
        assert f"resources/hub/allenai--Olmo-3-7B-RL-Zero-Code/{moved}" in r.stdout
    finally:
        git(repo_git, "reset", "-q", "--hard", before)

    bad = load_yaml(repo / "config/table1.yaml", "config")
    bad["models"]["experts"]["math"]["revision"] = "no-such-branch"
    (repo / "bad.yaml").write_text(json.dumps(bad))
    text = lock_file.read_text()
    r = plan("bad.yaml")
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert errors[0].startswith("error: models.experts.math: ") and "no-such-branch" in errors[0]
    assert lock_file.read_text() == text

    # a disk too small for the downloads (a 1 MB tmpfs where resources/ goes): one error with both
    # numbers, before any download; nothing written there
    small = repo / "resources"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)])
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (the disk check is not exercised)")
    try:
        r = plan()
        listing = list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert errors[0].startswith(f"error: not enough disk at {small}: the run needs ")
    assert "GB to download (4 models)" in errors[0] and "GB are free" in errors[0]
    assert listing == []


def mirror_pins(hub) -> dict:
    """A config overlay: the mirror's first commits where config/table1.yaml pins hub commits (the
    base, the IF expert, the IF prompts, and IFEval in its benchmark definition), which the mirror
    cannot have."""
    first = {r: hub.mirror.commits[r][0] for r in (BASE, IF_EXPERT, DOLCI["IF"], IFEVAL)}
    return {
        "models": {"base": {"revision": first[BASE]}, "experts": {"if": {"revision": first[IF_EXPERT]}}},
        "stats": {"prompts": {"if": {"revision": first[DOLCI["IF"]]}}},
        "eval": {"revisions": {"ifeval": first[IFEVAL]}},
    }  # fmt: skip


def mirror_overlay(hub, release: Path) -> dict:
    """What the table1 DAG test changes in config/table1.yaml besides the pins: only less work (CPU,
    two items per benchmark, 8 new tokens, 8 calibration prompts of 16 tokens, the demo models'
    context, two models per generation job) and the HumanEval+ file from a local copy."""
    pins = mirror_pins(hub)
    cpu = {"device": "cpu", "gpus": 0, "mem_mb": 4000}
    prompts = {d: {"n": 8} | pins["stats"]["prompts"].get(d, {}) for d in ("math", "code", "if")}
    return {
        "models": pins["models"],
        "merge_defaults": cpu,
        "stats": cpu | {"max_tokens": 16, "prompts": prompts},
        "eval": pins["eval"] | {
            "gpus": 0, "threads": 2, "score_threads": 1, "mem_mb": 6000, "limit": 2, "max_tokens": 8,
            "models_per_job": 2,
            "engine": {"max_model_len": 1024, "enforce_eager": True},
            "env": {"VLLM_CPU_KVCACHE_SPACE": 1},
            "evalplus_data": {"source": str(release), "sha256": sha256_of(release)},
        },
    }  # fmt: skip


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def jobs_planned(out: str) -> dict[str, int]:
    """{rule: count} of a `snakemake -n` job-stats table."""
    rows = re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[-1], re.M)
    return {rule: int(n) for rule, n in rows if rule != "total"}


def assert_recorded_commits(repo: Path, mirror) -> None:
    """The lock, the model folders, every merge.json, the prompts' sidecars and every sample and
    score file of the table1 run in `repo` name the commits the mirror served."""
    from mergeeval.yamlio import load_yaml

    lock = load_yaml(repo / "results/table1/revisions.lock.yaml", "lock")
    commits = {k: v["commit"] for k, v in lock.items()}
    first, main = (lambda r: mirror.commits[r][0]), mirror.main
    assert commits == {
        "models.base": first(BASE), "models.experts.math": main(MATH),
        "models.experts.code": main(CODE), "models.experts.if": first(IF_EXPERT),
        "stats.prompts.code": main(DOLCI["Code"]), "stats.prompts.if": first(DOLCI["IF"]),
        "stats.prompts.math": main(DOLCI["Math"]),
        "benchmarks.aime24": main(AIME), "benchmarks.aime25": main(AIME),
        "benchmarks.ifeval": first(IFEVAL),
    }  # fmt: skip
    # models: the folder name, source.json, every merge.json and every sample file's model
    folders = {lock[k]["repo"]: c for k, c in commits.items() if k.startswith("models.")}
    for repo_id, commit in folders.items():
        folder = repo / "resources/hub" / repo_id.replace("/", "--") / commit
        source = json.loads((folder / "source.json").read_text())
        assert (source["repo_id"], source["commit"]) == (repo_id, commit)
    merges = sorted((repo / "results/table1/models").glob("*/merge.json"))
    assert len(merges) == 12
    for m in merges:
        record = json.loads(m.read_text())
        used = [record["base"], *record["experts"]]
        assert {u["repo_id"]: u["commit"] for u in used} == folders, m
    # calibration prompts: the dataset commit in each sidecar (both statistics recipes)
    metas = list((repo / "resources/calibration").rglob("*.meta.json"))
    assert len(metas) == 6
    prompts = {lock[k]["repo"]: c for k, c in commits.items() if k.startswith("stats.")}
    assert all(
        prompts[(m := json.loads(p.read_text()))["dataset"]] == m["commit"] == m["revision"]
        for p in metas
    )
    # benchmark data: REPO@COMMIT in every sample and score file of a hub dataset; the HumanEval+
    # release from the configured file, its sha256 in the sidecar
    data = {b: f"{lock[f'benchmarks.{b}']['repo']}@{commits[f'benchmarks.{b}']}"
            for b in ("aime24", "aime25", "ifeval")}  # fmt: skip
    release = repo / "resources/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
    samples = list((repo / "results/table1/samples").rglob("*.meta.json"))
    scores = list((repo / "results/table1/scores").rglob("*.json"))
    assert len(samples) == 4 + 2 + 1 + 1 + 12 * 4 and len(scores) == 5 + 2 + 2 + 1 + 12 * 5
    for f in samples + scores:
        record = json.loads(f.read_text())
        want = data.get(record["benchmark"], str(release.resolve()))
        assert record["data"] == want, f
    for f in samples:
        meta = json.loads(f.read_text())
        if "merge" not in meta["model"]:  # a merge's record is its merge.json (checked above)
            assert folders[meta["model"]["repo_id"]] == meta["model"]["commit"], f
        assert meta["sampling"]["max_tokens"] == 8 and meta["limit"] == 2
    sidecar = json.loads(release.with_name(release.name + ".meta.json").read_text())
    assert sidecar["sha256"] == sha256_of(release)
    assert len((repo / "results/table1/table1.csv").read_text().splitlines()) == 15


@pytest.mark.slow
def test_table1_dag_runs_against_the_mirror_and_records_its_commits(hub, env, tmp_path):
    """config/table1.yaml through the whole DAG against the mirror (downloads, verification, both
    statistics recipes, every merge, generation, scoring, the report): every artefact records the
    commit the mirror served. A moved main then changes nothing; updating the lock plans again
    exactly what depends on the moved repo."""
    import gzip

    from tests.test_workflow import repo_copy

    repo = repo_copy(tmp_path / "repo")
    release = tmp_path / "HumanEvalPlus-v0.1.10.jsonl.gz"
    release.write_bytes(gzip.compress((ROOT / "evals/fixtures/humanevalplus.jsonl").read_bytes()))
    (repo / "mirror.yaml").write_text(json.dumps(mirror_overlay(hub, release)))
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}
    smk = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2"]
    smk += ["--configfile", "config/table1.yaml", "mirror.yaml"]

    def snakemake(*extra, timeout=3000):
        return subprocess.run([*smk, *extra], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    r = snakemake()
    assert r.returncode == 0, r.stderr[-4000:]
    assert (repo / "results/table1/table1.md").is_file()

    assert_recorded_commits(repo, hub.mirror)

    # main moves in the Code expert's repo: nothing to do until the lock is updated; then exactly
    # what depends on the Code expert is planned again
    code = "allenai/Olmo-3-7B-RL-Zero-Code"
    before = hub.mirror.main(code)
    moved = git_commit(hub.mirror.repo(code), {"NOTES.md": b"moved on\n"}, "main moves",
                       "2025-12-02T10:00:00+00:00")  # fmt: skip
    try:
        r = snakemake("-n")
        assert r.returncode == 0 and "Nothing to be done" in r.stdout, r.stdout[-3000:]
        r = snakemake("-n", "--config", "update_lock=true")
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        git(hub.mirror.repo(code), "reset", "-q", "--hard", before)
    jobs = jobs_planned(r.stdout)
    assert f"resources/hub/allenai--Olmo-3-7B-RL-Zero-Code/{moved}" in r.stdout
    assert jobs["download_model"] == 1 and jobs["merge_model"] == 12, jobs
    assert jobs["collect_stats"] == 1 and "download_prompts" not in jobs, jobs  # the Code Grams
    # generation and scoring: batch 1 (the base and the Math expert) stays; the other 7 batches
    # hold the Code expert or merges
    assert jobs["generate_samples"] == jobs["score_samples"] == 7, jobs
    assert "results/table1/batches/generate/batch1.json" not in r.stdout
