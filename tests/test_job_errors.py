"""The `error: ` lines of failed jobs, summarised on the console when the DAG stops
(pipeline.job_errors, the Snakefile's onerror handler)."""

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

from pipeline import job_errors
from pipeline.job_errors import error_lines, failed_job_logs, recent_logs, report, summary
from tests.test_workflow import ROOT, repo_copy, snakemake


def write(path: Path, text: str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_error_lines_are_the_last_few_distinct_ones(tmp_path):
    log = write(
        tmp_path / "a.log",
        "INFO merges: reading\n"
        "error: first\n"
        "Traceback (most recent call last):\n"
        "  an error: inside a line is not one\n"
        "error: second\n"
        "error: first\n" + "".join(f"error: n{i}\n" for i in range(6)) + "error: n5\n",
    )
    # the repeated lines count once, at their last place; the last five, oldest first
    assert error_lines(log) == [f"error: n{i}" for i in range(1, 6)]
    assert error_lines(log, last=3) == ["error: n3", "error: n4", "error: n5"]
    short = write(tmp_path / "b.log", "error: x\nerror: y\nerror: x\n")
    assert error_lines(short) == ["error: y", "error: x"]
    assert error_lines(write(tmp_path / "ok.log", "all good\n")) == []
    assert error_lines(tmp_path / "missing.log") == []
    binary = tmp_path / "bin.log"
    binary.write_bytes(b"\xff\xfe junk\nerror: after junk \xff\n")
    assert error_lines(binary) == ["error: after junk \ufffd"]


def test_only_logs_written_since_the_start_are_recent(tmp_path):
    start = time.time()
    write(tmp_path / "logs/old/merge.log", "error: from yesterday\n", mtime=start - 86400)
    new = write(tmp_path / "logs/run/merge_model/ta.log", "error: today\n")
    quiet = write(tmp_path / "logs/run/merge_model/ok.log", "done\n")
    assert recent_logs(tmp_path / "logs", start - 1) == [quiet, new]
    assert recent_logs(tmp_path / "nothing", start) == []
    # without Snakemake's failed jobs: the recent logs that hold error lines
    text = report(None, tmp_path / "logs", since=start - 1)
    assert "today" in text and "yesterday" not in text and "ok.log" not in text


def test_the_summary_names_each_failed_jobs_log_with_its_errors(tmp_path, capsys):
    a = write(tmp_path / "logs/r/merge_model/ta.log", "error: expert x has no tensor y\n" * 3)
    b = write(tmp_path / "logs/r/generate_samples/b0.log", "Traceback ...\nValueError: boom\n")
    c = write(tmp_path / "logs/r/verify_models.log", "error: vocab 1024 vs 1030\n")
    # an old log with an error that no failed job of this invocation wrote
    write(tmp_path / "logs/r/merge_model/old.log", "error: old\n")
    jobs = [SimpleNamespace(log=[str(a)]), SimpleNamespace(log=[str(b), str(c)])]
    workflow = SimpleNamespace(scheduler=SimpleNamespace(failed=jobs))
    assert failed_job_logs(workflow) == sorted([a, b, c])
    assert failed_job_logs(SimpleNamespace()) is None
    text = report(workflow, tmp_path / "logs", since=0)
    assert text.splitlines() == [
        "Errors reported by the failed jobs (the last lines starting 'error: ' of each log):",
        f"  {a}:",
        "    error: expert x has no tensor y",
        f"  {c}:",
        "    error: vocab 1024 vs 1030",
    ]
    assert capsys.readouterr().err == text + "\n"
    # nothing to say: nothing printed
    assert report(SimpleNamespace(scheduler=SimpleNamespace(failed=[]))) == ""
    assert capsys.readouterr().err == ""
    many = [write(tmp_path / f"m/{i:02}.log", f"error: {i}\n") for i in range(25)]
    lines = summary(many, max_logs=20).splitlines()
    assert lines[-1] == "  ... and 5 more logs with errors" and len(lines) == 1 + 20 * 2 + 1
    # a summary that fails says so in one line instead of hiding Snakemake's report
    broken = SimpleNamespace(scheduler=SimpleNamespace(failed=[SimpleNamespace(log=1)]))
    assert report(broken).startswith("(the failed jobs' errors could not be summarised: TypeError")


def test_started_moves_the_fallback_window(tmp_path, monkeypatch):
    monkeypatch.setattr(job_errors, "_started", 0.0)
    write(tmp_path / "logs/a.log", "error: a\n", mtime=time.time() - 60)
    assert "error: a" in report(None, tmp_path / "logs")
    job_errors.started()
    assert report(None, tmp_path / "logs") == ""


def test_a_failed_job_s_user_error_is_on_the_console(tmp_path):
    """A real DAG run in a copy of the repository: an expert lacking a tensor fails the run's
    model check with one `error:` line in its log, which the console now shows with the log."""
    repo = repo_copy(tmp_path)
    broken = repo / "broken" / "code"
    shutil.copytree(ROOT / "demofamily/models/code", broken)
    drop_tensor(broken / "model.safetensors", "model.norm.weight")
    old = write(repo / "logs/joberr/merge_model/old.log", "error: stale\n", mtime=time.time() - 600)
    config = {
        "run": "joberr",
        "models": {
            "source": "demo",
            "base": {},
            "experts": {"math": {}, "code": {"path": "broken/code"}},
            "tokenizer_from": "math",
        },
        "merges": {"task_arithmetic": {"method": "task_arithmetic", "params": {"scale": 0.4}}},
        "merge_defaults": {"device": "cpu", "gpus": 0, "mem_mb": 2000, "runtime": 10},
        "eval": {"suite": "demo", "limit": 1, "max_tokens": 8, "gpus": 0, "threads": 1},
    }
    (repo / "config/joberr.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(
        "--cores", "1", "results/joberr/models/task_arithmetic", "--configfile", "config/joberr.yaml",
        cwd=repo, timeout=600,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    line = f"error: expert {Path('broken/code')} has no tensor model.norm.weight"
    summary_at = out.find("Errors reported by the failed jobs")
    assert summary_at >= 0, out[-3000:]
    tail = out[summary_at:]
    assert "  logs/joberr/verify_models.log:\n    " + line in tail, tail
    assert str(old.relative_to(repo)) not in tail and "stale" not in tail


def drop_tensor(path: Path, name: str) -> None:
    """Rewrite a safetensors file without tensor `name` (bytes copied, no torch)."""
    import json

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    head, data = {"__metadata__": header.pop("__metadata__", {})}, b""
    for k in sorted(header):
        if k == name:
            continue
        start, end = header[k]["data_offsets"]
        head[k] = header[k] | {"data_offsets": [len(data), len(data) + end - start]}
        data += raw[8 + n + start : 8 + n + end]
    text = json.dumps(head).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
