"""Benchmark data from where the user says: a local path or a mirror URL (a loopback HTTP server
here), copied whole, sha256 checked and recorded; a wrong sha256 leaves nothing behind; the plan
routes the file to HumanEval and HumanEval+ generation."""

import gzip
import hashlib
import http.server
import json
import threading

import pytest

from evals.cli import main
from pipeline.plan import Plan
from tests.test_plan import cfg

ROWS = [{"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f"}]


@pytest.fixture
def release(tmp_path):
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    path = tmp_path / "HumanEvalPlus-v0.1.10.jsonl.gz"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_from_a_path_and_a_mirror_url_sha256_checked_and_recorded(tmp_path, release):
    path, sha = release
    out = tmp_path / "resources/evalplus/release.jsonl.gz"
    assert main(["fetch-data", "--source", str(path), "--sha256", sha, "--output", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()
    assert json.loads((tmp_path / "resources/evalplus/release.jsonl.gz.meta.json").read_text()) == {
        "source": str(path), "sha256": sha, "bytes": path.stat().st_size}  # fmt: skip

    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(path.parent))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{path.name}"
        out2 = tmp_path / "from-url.jsonl.gz"
        assert main(["fetch-data", "--source", url, "--output", str(out2)]) == 0
    finally:
        server.shutdown()
    assert out2.read_bytes() == path.read_bytes()
    assert json.loads(out2.with_name(out2.name + ".meta.json").read_text())["sha256"] == sha


def test_a_wrong_sha256_or_a_missing_file_is_one_error_and_nothing_is_left(
    tmp_path, release, capsys
):
    path, sha = release
    out = tmp_path / "out.jsonl.gz"
    rc = main(["fetch-data", "--source", str(path), "--sha256", "0" * 64, "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"sha256 {sha} is not the configured" in err
    assert list(tmp_path.iterdir()) == [path]
    rc = main(["fetch-data", "--source", str(tmp_path / "nope.gz"), "--output", str(out)])
    assert rc == 2 and "is not a file" in capsys.readouterr().err


def test_the_plan_routes_the_release_to_humaneval_generation():
    c = cfg("table1")
    c["eval"]["evalplus_data"] = {
        "source": "/mirror/HumanEvalPlus-v0.1.10.jsonl.gz",
        "sha256": None,
    }
    plan = Plan(c)
    file = "resources/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
    assert plan.evalplus_benchmarks() == ["humaneval", "humanevalplus"]
    assert plan.data_inputs() == [file]
    request = plan.generate_request(next(iter(plan.batches)))
    assert request["data"] == {"humaneval": file}  # HumanEval+ scores HumanEval's samples
    assert "data" not in Plan(cfg("table1")).generate_request(next(iter(plan.batches)))
