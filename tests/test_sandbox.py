"""The sandbox for model-written code: hostile candidates fail alone and leave nothing behind."""

import json
import os
import subprocess
import sys
import tempfile
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
