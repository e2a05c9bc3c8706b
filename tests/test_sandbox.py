"""The sandbox for model-written code: hostile candidates fail alone and leave nothing behind."""

import errno
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from evals import sandbox
from evals.errors import EvalInputError
from evals.registry import FIXTURES
from evals.samples import write_samples
from evals.score import score_file

MARKER = "987654"  # sleepers exec `sleep 987654`, found afterwards by their command line

bwrap_only = pytest.mark.skipif(
    sandbox.mode() != "bwrap", reason="the isolation tests need bubblewrap: install bubblewrap"
)


def survivors() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and MARKER in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def outside(tmp_path):
    """Two directories outside the sandbox: one under /tmp (pytest's) and one under /var/tmp."""
    other = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="mergeeval-test-"))
    yield [tmp_path / "target", other]
    for f in other.iterdir():
        f.unlink()
    other.rmdir()


def in_tmp(dirs) -> Path:
    return Path(tempfile.gettempdir()) / f"mergeeval-hostile-{dirs[0].parent.name}"


def hostile(dirs) -> list[str]:
    """Bodies for add_two (HumanEval/0) that attack the host; each ends by failing the test."""
    writes = [f"    open('{in_tmp(dirs)}', 'w').write('x')\n"]  # succeeds, in a private /tmp
    for n, d in enumerate(dirs):
        d.mkdir(exist_ok=True)
        writes += [
            f"    open('{d}/open{n}', 'w').write('x')\n",
            f"    import io\n    io.open('{d}/io{n}', 'w').write('x')\n",
            f"    import pathlib\n    pathlib.Path('{d}/pathlib{n}').write_text('x')\n",
            f"    import posix\n    posix.system('touch {d}/system{n}')\n",
        ]
    fork = (
        "    import posix\n    for i in range(50):\n        if posix.fork() == 0:\n"
        "            if i % 2:\n                posix.setsid()\n"
        f"            posix.execv('/bin/sleep', ['sleep', '{MARKER}'])\n"
    )
    return [
        *writes,
        "    import posix\n    posix.kill(posix.getppid(), 9)\n",
        fork,
        "    x = bytearray(20 << 30)\n    x[-1] = 1\n",
        "    while True:\n        pass\n",
        "    return\nwhile True:\n    pass\n",  # loops at import, outside EvalPlus's per-test limit
    ]


def _score(tmp_path, completions, benchmark="humaneval", **kw):
    samples = tmp_path / "samples.jsonl"
    write_samples(samples, [{"id": "HumanEval/0", "completions": completions}])
    out = tmp_path / "score.json"
    return score_file(benchmark, samples, out, source="fixture", subset=True, **kw)


@bwrap_only
def test_hostile_candidates_fail_alone_and_leave_nothing(tmp_path, outside):
    bad = hostile(outside)
    good = ["    return a + b\n", "    return b + a\n"]
    res = _score(tmp_path, [good[0], *bad, good[1]], "humanevalplus")
    item = res["items"][0]
    assert item["correct"] == [True] + [False] * len(bad) + [True]
    assert res["sandbox"] == "bwrap"
    killer = bad.index("    import posix\n    posix.kill(posix.getppid(), 9)\n") + 1
    assert item["base_status"][killer] == "killed" and "SIGKILL" in item["errors"][killer]
    assert item["errors"][0] is None and item["errors"][-1] is None
    assert [f.name for d in outside for f in d.iterdir()] == []
    assert not in_tmp(outside).exists()
    assert survivors() == []
    assert json.loads((tmp_path / "score.json").read_text())["items"][0]["errors"][killer]


def test_sandbox_limits_and_isolation(tmp_path):
    out = sandbox.run_python("import sys\nemit(sys.stdin.read())", b"job", timeout=10)
    assert (out.status, out.result) == ("ok", "job")
    out = sandbox.run_python("while True:\n    pass", b"", timeout=1)
    assert out.status == "timeout"
    out = sandbox.run_python("x = bytearray(20 << 30)", b"", timeout=10, memory=1 << 30)
    assert out.status == "crashed" and "MemoryError" in out.detail
    out = sandbox.run_python("import os\nos.kill(os.getpid(), 9)", b"", timeout=10)
    assert out.status == "killed"
    out = sandbox.run_python("print('not emitted')", b"", timeout=10)
    assert out.status == "no result"
    limits = "import resource as r\nemit([r.getrlimit(getattr(r, k))[0] for k in {!r}])"
    names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE"]
    out = sandbox.run_python(limits.format(names), b"", timeout=9.5, memory=3 << 30)
    assert out.result == [3 << 30, 11, sandbox.FSIZE]


@bwrap_only
def test_sandbox_limits_processes():
    out = sandbox.run_python("import resource as r\nemit(r.getrlimit(r.RLIMIT_NPROC))", b"", 10)
    assert out.result == [sandbox.NPROC, sandbox.NPROC]


@bwrap_only
def test_sandbox_has_no_network_and_a_private_tmp(tmp_path):
    (tmp_path / "seen").write_text("x")
    program = (
        "import os\n"
        f"emit([open('/proc/net/dev').read(), os.path.exists({str(tmp_path / 'seen')!r}), os.getcwd()])"
    )
    out = sandbox.run_python(program, b"", timeout=10)
    net, seen, cwd = out.result
    interfaces = [line.split(":")[0].strip() for line in net.splitlines()[2:]]
    assert interfaces == ["lo"] and not seen and cwd.startswith(tempfile.gettempdir())
    assert not Path(cwd).exists()  # the throwaway directory is gone


@bwrap_only
def test_original_humaneval_data_runs_sandboxed(tmp_path, outside):
    row = json.loads((FIXTURES / "humaneval.jsonl").read_text().splitlines()[0])
    data = tmp_path / "he.jsonl"
    for d in outside:
        d.mkdir(exist_ok=True)
    in_tmp = Path(tempfile.gettempdir()) / f"mergeeval-data-{tmp_path.name}"
    writes = "".join(f"    open('{f}', 'w').write('x')\n" for f in (in_tmp, outside[1] / "data"))
    row["test"] = row["test"].replace("def check(candidate):\n", "def check(candidate):\n" + writes)
    data.write_text(json.dumps(row) + "\n")
    samples = tmp_path / "s.jsonl"
    write_samples(samples, [{"id": row["task_id"], "completions": [row["canonical_solution"]]}])
    with pytest.raises(EvalInputError, match="(?s)could not record the test inputs.*Read-only"):
        score_file("humaneval", samples, tmp_path / "o.json", data=data)
    assert [f.name for d in outside for f in d.iterdir()] == [] and not in_tmp.exists()


def test_without_bwrap_scoring_refuses_unless_the_user_opts_out(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    monkeypatch.setattr(sandbox, "_mode", None)
    monkeypatch.setattr(sandbox, "_allowed", False)
    with pytest.raises(EvalInputError, match="install bubblewrap.*--allow-unsandboxed"):
        _score(tmp_path, ["    return a + b\n"])
    assert not (tmp_path / "score.json").exists()
    with pytest.raises(EvalInputError, match="eval.allow_unsandboxed"):
        sandbox.run_python("emit(1)", b"", timeout=10)
    # the command line says the same, once, without a traceback
    samples = tmp_path / "samples.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "evals", "score", "--benchmark", "humaneval", "--samples", samples]
        + ["--output", tmp_path / "cli.json", "--source", "fixture", "--subset"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH="/nonexistent"),
    )
    assert r.returncode == 2 and "install bubblewrap" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cli.json").exists()

    # opted out: one warning, and every process a candidate starts is still killed
    fork = (
        "    import posix\n    for i in range(5):\n        if posix.fork() == 0:\n"
        f"            posix.execv('/bin/sleep', ['sleep', '{MARKER}'])\n"
    )
    res = _score(
        tmp_path, ["    return a + b\n", fork, "    return b + a\n"], allow_unsandboxed=True
    )
    assert res["items"][0]["correct"] == [True, False, True]
    assert res["sandbox"] == "rlimits-only" and res["allow_unsandboxed"] is True
    assert sandbox.run_python("emit(1)", b"", timeout=10).result == 1
    err = capsys.readouterr().err
    assert err.count("WARNING: bubblewrap") == 1 and "install bubblewrap" in err
    assert survivors() == []


def sandbox_cgroups() -> list[str]:
    """This process's sandbox cgroups that still exist (each is removed when its program ends)."""
    cgroup = sandbox._pids_cgroup()
    if cgroup is None:
        return []
    return [n for n in os.listdir(cgroup[0]) if n.startswith(f"mergeeval-{os.getpid()}-")]


# forks without bound; a third of the children turn into sleepers, found afterwards by MARKER
BOMB = (
    "    import posix\n    while True:\n        if posix.fork() == 0 and posix.getpid() % 3 == 0:\n"
    f"            posix.execv('/bin/sleep', ['sleep', '{MARKER}'])\n"
)


@bwrap_only
def test_fork_bomb_is_capped_for_any_user_and_the_others_are_scored(tmp_path, monkeypatch):
    """As root the kernel ignores RLIMIT_NPROC: the cap is the sandbox's pids cgroup (pids.max),
    so a fork bomb beside normal candidates fails alone, promptly, and leaves nothing behind."""
    cap = sandbox.process_cap()
    if os.getuid() == 0:  # never let the bomb loose uncapped (scoring would refuse anyway)
        assert cap.startswith(f"pids.max={sandbox.NPROC} (cgroup v"), cap
    else:
        assert cap.startswith("pids.max=") or cap == f"RLIMIT_NPROC={sandbox.NPROC}", cap
    monkeypatch.setenv("EVALPLUS_WORKERS", "3")  # the bomb runs beside the good candidates
    good = ["    return a + b\n", "    return b + a\n", "    return sum([a, b])\n"]
    bomb_spin = BOMB.replace("    import posix\n", "    import posix\n    x = 1\n")  # a second one
    t0 = time.monotonic()
    res = _score(tmp_path, [good[0], BOMB, good[1], bomb_spin, good[2]], "humanevalplus")
    took = time.monotonic() - t0
    item = res["items"][0]
    assert item["correct"] == [True, False, True, False, True], item
    assert item["errors"][0] is None and item["errors"][2] is None and item["errors"][4] is None
    assert res["sandbox"] == "bwrap" and res["sandbox_process_cap"] == cap
    assert json.loads((tmp_path / "score.json").read_text())["sandbox_process_cap"] == cap
    assert took < 25, f"scoring took {took:.1f} s"
    assert survivors() == [] and sandbox_cgroups() == []


def test_process_cap_stops_forks_and_lets_threads_run():
    """The cap in every mode a test can reach here: forks stop at it, 8 threads are fine."""
    if sandbox.process_cap().startswith("none"):
        pytest.skip(f"no process cap here: {sandbox.process_cap()}")
    threads = (
        "import threading\nseen = []\n"
        "ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in ts]\n[t.join() for t in ts]\nemit(sorted(seen))"
    )
    out = sandbox.run_python(threads, b"", timeout=10)
    assert (out.status, out.result) == ("ok", list(range(8)))
    forks = (
        "import posix\nn = 0\ntry:\n    while n < 1000:\n        if posix.fork() == 0:\n"
        f"            posix.execv('/bin/sleep', ['sleep', '{MARKER}'])\n        n += 1\n"
        "except OSError as e:\n    emit([n, e.errno])\n"
    )
    t0 = time.monotonic()
    out = sandbox.run_python(forks, b"", timeout=20)
    assert out.status == "ok" and out.result[0] < sandbox.NPROC and out.result[1] == errno.EAGAIN
    assert time.monotonic() - t0 < 10  # its sleepers were killed when it ended, not waited for
    assert survivors() == [] and sandbox_cgroups() == []


def test_as_root_without_a_pids_cgroup_scoring_refuses(tmp_path, monkeypatch, capsys):
    """Root with no writable pids cgroup: refused with the reason, never silently uncapped; opted
    out, one warning and "none: ..." recorded; not root, RLIMIT_NPROC is the cap."""
    monkeypatch.setattr(sandbox, "_mode", "bwrap")
    monkeypatch.setattr(sandbox, "_allowed", False)
    monkeypatch.setattr(sandbox, "_cgroup_checked", True)
    monkeypatch.setattr(sandbox, "_cgroup", None)
    monkeypatch.setattr(sandbox, "_cgroup_why", "no pids cgroup can be made here (read-only)")
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 0)
    with pytest.raises(EvalInputError, match=r"(?s)cannot cap its processes: as root.*RLIMIT_NPROC"
                       r".*read-only.*non-root.*--allow-unsandboxed"):  # fmt: skip
        _score(tmp_path, ["    return a + b\n"])
    assert not (tmp_path / "score.json").exists()
    assert sandbox.process_cap().startswith("none: as root the kernel does not enforce")
    sandbox.allow_unsandboxed()
    try:
        sandbox.require()
        sandbox.require()
    finally:
        sandbox.allow_unsandboxed(False)
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "without a process cap" in err
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 1000)
    assert sandbox.require() == "bwrap"
    assert sandbox.process_cap() == f"RLIMIT_NPROC={sandbox.NPROC}"


def _venv_link_check(python: Path, cwd: str) -> dict:
    """The sandbox's self-test and one sandboxed program, in a process started as `python`."""
    code = (
        f"import sys, json\nsys.path.insert(0, {cwd!r})\nfrom evals import sandbox\n"
        "out = sandbox.run_python('import sys\\nemit([sys.executable, sys.prefix])', b'', 20)\n"
        "print(json.dumps({'self_test': sandbox._self_test(), 'mode': sandbox.mode(), "
        "'status': out.status, 'result': out.result, 'detail': out.detail, "
        "'links': sandbox._python_paths()[1]}))"
    )
    r = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@bwrap_only
def test_sandbox_runs_a_symlinked_venv(tmp_path):
    """A venv reached through links under /tmp (hidden there by the sandbox's tmpfs): the links
    are recreated inside, so the interpreter path works and sees its packages."""
    venv = Path(sys.prefix)
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "venv").symlink_to(venv)  # absolute, to this venv (its real path or not)
    (tmp_path / "a" / "venv").symlink_to("../b/venv")  # relative, to the other link
    python = tmp_path / "a" / "venv" / "bin" / Path(sys.executable).name
    repo = str(Path(__file__).resolve().parent.parent)
    got = _venv_link_check(python, repo)
    assert got["self_test"] is None and got["mode"] == "bwrap"
    assert (got["status"], got["result"]) == ("ok", [str(python), str(tmp_path / "a" / "venv")])
    assert got["links"] == {
        str(tmp_path / "a" / "venv"): "../b/venv",
        str(tmp_path / "b" / "venv"): str(venv),
    }


@bwrap_only
def test_sandbox_runs_a_venv_under_tmp_through_a_link(tmp_path, outside):
    """The other way round: `.venv` outside /tmp, a link to a venv that lives under /tmp."""
    real = tmp_path / "realvenv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", real], check=True, timeout=60)
    outside[1].mkdir(exist_ok=True)
    link = outside[1] / "venv"
    link.symlink_to(real)
    try:
        python = link / "bin" / "python"
        got = _venv_link_check(python, str(Path(__file__).resolve().parent.parent))
    finally:
        link.unlink()
    assert got["self_test"] is None and got["mode"] == "bwrap"
    assert (got["status"], got["result"]) == ("ok", [str(python), str(link)])


def test_finds_its_own_pids_cgroup_in_v2_and_v1(tmp_path):
    """Where sandbox cgroups go: this process's cgroup in the v2 hierarchy when pids is available
    there, else in v1's pids hierarchy (as here: a hybrid layout, pids on v1)."""
    proc, fs = tmp_path / "proc", tmp_path / "fs"
    proc.mkdir()
    unified = fs / "unified" / "user.slice" / "a b.scope"
    unified.mkdir(parents=True)
    (proc / "cgroup").write_text("7:pids:/job\n3:cpu,cpuacct:/job\n0::/user.slice/a b.scope\n")
    mounts = [
        f"31 23 0:28 / {fs} rw,relatime - tmpfs tmpfs rw,mode=755",
        f"39 31 0:36 / {fs}/pids rw,relatime - cgroup cgroup rw,pids",
        f"40 31 0:37 / {fs}/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct",
        f"41 31 0:38 / {fs}/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
    ]
    (proc / "mountinfo").write_text("\n".join(m.replace("a b", "a\\040b") for m in mounts) + "\n")
    (unified / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert sandbox._own_cgroups(str(proc)) == (
        [(str(unified), 2), (str(fs / "pids" / "job"), 1)],
        [],
    )
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    found, why = sandbox._own_cgroups(str(proc))
    assert found == [(str(fs / "pids" / "job"), 1)] and why == [
        f"cgroup v2 {unified} has no pids controller"
    ]
    (proc / "cgroup").write_text("0::/\n")  # a container's own cgroup namespace: its root
    (proc / "mountinfo").write_text(f"41 31 0:38 / {fs} ro,relatime - cgroup2 cgroup2 rw\n")
    (fs / "cgroup.controllers").write_text("cpu pids\n")
    assert sandbox._own_cgroups(str(proc)) == ([(str(fs), 2)], [])
