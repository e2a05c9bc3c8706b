"""The fingerprint check catches the small bugs a user makes in a method's arithmetic: one line of a
copy of the code changed, the demo's merge rerun and fingerprinted against the committed baseline
(config/demo_expected/fingerprints.json). The merge is named MOVED with its tensors; the same code
unchanged is identical to the baseline, for a full model and for a merge written as a LoRA adapter."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mergeeval.yamlio import load_yaml
from pipeline.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "config/demo_expected/fingerprints.json"

BUGS = {
    "wrong sign": (
        "task_arithmetic",
        "merges/methods/task_arithmetic.py",
        "return p.scale * task.deltas.sum(0)",
        "return -p.scale * task.deltas.sum(0)",
    ),
    "dropped rescale": (
        "dare",
        "merges/methods/dare.py",
        "d.masked_fill_(~mask, 0).div_(1.0 - p.drop_rate)",
        "d.masked_fill_(~mask, 0)",
    ),
    "off-by-one rank": (
        "tsv",
        "merges/methods/tsv.py",
        "k = min(m, n) // t_count",
        "k = min(m, n) // t_count - 1",
    ),
    "dropped alpha/r": (
        "lora_task_arithmetic",
        "merges/adapter.py",
        "else alpha / rank",
        "else alpha",
    ),
    "unchanged": ("ties", None, None, None),
    "unchanged adapter output": ("lora_ta_adapter", None, None, None),
}


def merge_and_fingerprint(code: Path, merge_id: str, out: Path) -> tuple[int, str, dict]:
    spec = Plan(load_yaml(ROOT / "config/demo.yaml", "run config")).merge_spec(merge_id)
    for key in ("base", "tokenizer_from"):
        spec[key] = str(ROOT / spec[key])
    spec["experts"] = [str(ROOT / e) for e in spec["experts"]]
    assert not spec["stats"]  # data-free methods: no statistics to build here
    spec["output"] = str(out / merge_id)
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec))
    py = [sys.executable, "-m", "merges"]  # run from the copy: its packages come first on sys.path
    subprocess.run([*py, "run", "--spec", out / "spec.json", "--quiet"], cwd=code, check=True)
    fp = out / "fp.json"
    r = subprocess.run(
        [*py, "fingerprint", out / merge_id, "--base", spec["base"], "--id", merge_id,
         "--baseline", BASELINE, "-o", fp],
        cwd=code, capture_output=True, text=True,
    )  # fmt: skip
    return r.returncode, r.stdout + r.stderr, json.loads(fp.read_text())["comparison"]


@pytest.mark.parametrize("bug", list(BUGS))
def test_a_one_line_bug_is_named_before_generation(tmp_path, bug):
    merge_id, path, old, new = BUGS[bug]
    code = tmp_path / "code"
    for pkg in ("merges", "mergeeval"):
        shutil.copytree(ROOT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if path:
        source = (code / path).read_text()
        assert source.count(old) == 1, f"{path} no longer holds {old!r}; update the bug"
        (code / path).write_text(source.replace(old, new))
    rc, out, comparison = merge_and_fingerprint(code, merge_id, tmp_path / "run")
    assert rc == 0, out
    if path is None:
        assert comparison["status"] == "identical", out
        return
    assert comparison["status"] == "moved" and f"{merge_id}: MOVED" in out, out
    assert min(comparison["moved"].values()) > 0.1  # beyond the 0.05 tolerance
