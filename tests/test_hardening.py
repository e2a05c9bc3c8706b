"""Hostile-but-realistic input to the merge and evaluation commands: one clear message (exit 2),
no traceback, nothing partial left behind, and no input changed (hashed before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merges.cli import main as merges_main
from merges.grams import STATS_JSON

ROOT = Path(__file__).resolve().parents[1]
UP0 = "model.layers.0.mlp.up_proj.weight"


def tree_hash(*folders: Path) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            h.update(str(p).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*partial*"))


@pytest.fixture
def family(tiny_family, tmp_path):
    """A private copy of the tiny family under tmp/models/{base,math,code,if}."""
    base, experts = tiny_family
    root = tmp_path / "models"
    for src in (base, *experts):
        shutil.copytree(src, root / src.name)
    return root, root / "base", [root / e.name for e in experts]


@pytest.fixture(scope="module")
def stats_dirs(tiny_family, tmp_path_factory):
    """Real RegMean statistics of the tiny base (one folder, reused for every expert)."""
    from merges.stats import collect_grams

    base, _ = tiny_family
    root = tmp_path_factory.mktemp("stats")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"add {i} and {i + 1}"}) + "\n" for i in range(4))
    )
    collect_grams(base, prompts, root / "grams", max_tokens=32, device="cpu")
    return root / "grams", prompts


def run_cli(argv, capsys):
    """Run `python -m merges` in-process; return (exit code, stderr)."""
    old = signal.getsignal(signal.SIGTERM)
    try:
        code = merges_main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    return code, err


def merge_argv(base, experts, out, *extra, method="task_arithmetic"):
    argv = ["run", "--method", method, "--base", base, "--output", out, "--quiet"]
    for e in experts:
        argv += ["--expert", e]
    return argv + list(extra)


def assert_refused(code, err, match):
    assert code == 2, err
    assert "Traceback" not in err
    assert match in err, err
    assert err.count("error:") == 1, err


# --- inputs are sacred -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "where,match",
    [
        ("root", "contains the base"),
        ("expert", "is the expert"),
        ("base", "is the base"),
        ("inside", "lies inside the expert"),
    ],
)
def test_output_never_overlaps_an_input(family, capsys, where, match):
    root, base, experts = family
    out = {
        "root": root,
        "expert": experts[1],
        "base": base,
        "inside": experts[0] / "sub",
    }[where]
    before = tree_hash(root)
    code, err = run_cli(merge_argv(base, experts, out, "--force"), capsys)
    assert_refused(code, err, match)
    assert tree_hash(root) == before and not leftovers(root)


def test_force_replaces_only_a_folder_this_project_wrote(family, tmp_path, capsys):
    _, base, experts = family
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, err = run_cli(merge_argv(base, experts, mine, "--force"), capsys)
    assert_refused(code, err, "holds no merge.json")
    assert (mine / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "merged"
    assert run_cli(merge_argv(base, experts, out), capsys)[0] == 0
    assert run_cli(merge_argv(base, experts, out, "--force"), capsys)[0] == 0  # ours: replaced
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_refused(*run_cli(merge_argv(base, experts, afile, "--force"), capsys), "not a folder")


def test_stats_never_replaces_its_model(family, stats_dirs, capsys):
    root, base, _ = family
    _, prompts = stats_dirs
    before = tree_hash(root)
    argv = ["stats", "--model", base, "--prompts", prompts, "--output", base, "--force"]
    assert_refused(*run_cli(argv, capsys), "is the model")
    argv[-2] = prompts
    argv[2] = base
    assert_refused(*run_cli(argv, capsys), "is the prompts file")
    assert tree_hash(root) == before


def test_verify_report_never_lands_in_a_model(family, capsys):
    root, base, experts = family
    before = tree_hash(root)
    argv = ["verify", "--base", base, "--expert", experts[0], "--output", base / "report.json"]
    assert_refused(*run_cli(argv, capsys), "lies inside the base")
    assert tree_hash(root) == before


# --- everything checked before the first tensor ----------------------------------------------


def _rewrite_header(path: Path, fn) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    fn(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def _corrupt(folder: Path, case: str) -> None:
    f = folder / "model.safetensors"
    if case == "garbage":
        f.write_bytes(os.urandom(4096))
    elif case == "absurd_length":
        f.write_bytes(struct.pack("<Q", 2**62) + f.read_bytes()[8:])
    elif case == "short":
        f.write_bytes(b"\x01\x02")
    elif case == "truncated":
        f.write_bytes(f.read_bytes()[:-1000])
    elif case == "offsets":
        _rewrite_header(f, lambda h: h[UP0].update(shape=[h[UP0]["shape"][0], 3]))
    elif case == "dtype":
        _rewrite_header(f, lambda h: h[UP0].update(dtype="F32"))
    elif case == "overlap":

        def overlap(h):
            a, b = sorted(
                (k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"]
            )[:2]
            h[b]["data_offsets"] = h[a]["data_offsets"]
            h[b]["shape"], h[b]["dtype"] = h[a]["shape"], h[a]["dtype"]

        _rewrite_header(f, overlap)
    elif case == "index":
        (folder / "model.safetensors.index.json").write_text("{not json")
    elif case == "index_escape":
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {UP0: "../base/model.safetensors"}})
        )
    elif case == "config":
        (folder / "config.json").write_text("{")


@pytest.mark.parametrize(
    "case,match",
    [
        ("garbage", "corrupt safetensors file"),
        ("absurd_length", "exceeds the file"),
        ("short", "only 2 bytes long"),
        ("truncated", "past the end of the file"),
        ("offsets", "needs"),
        ("dtype", "needs"),
        ("overlap", "overlap"),
        ("index", "model.safetensors.index.json is malformed"),
        ("index_escape", "shards must be .safetensors files in the model folder"),
    ],
)
def test_corrupt_checkpoints_are_named_before_merging(family, tmp_path, capsys, case, match):
    root, base, experts = family
    _corrupt(experts[2], case)
    out = tmp_path / "out"
    assert_refused(*run_cli(merge_argv(base, experts, out), capsys), match)
    assert not out.exists() and not leftovers(tmp_path)


def test_base_config_and_tokenizer_source_checked_first(family, tmp_path, capsys):
    _, base, experts = family
    out = tmp_path / "out"
    (base / "config.json").write_text("{")
    assert_refused(
        *run_cli(merge_argv(base, experts, out), capsys), "config.json is not valid JSON"
    )
    (base / "config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    argv = merge_argv(base, experts, out, "--tokenizer-from", tmp_path / "empty")
    assert_refused(*run_cli(argv, capsys), "has no tokenizer files")
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "param,match",
    [
        ("scale=nan", "finite number"),
        ("scale=inf", "finite number"),
        ("scale=abc", "valid number"),
    ],
)
def test_parameter_values_are_checked(family, tmp_path, capsys, param, match):
    _, base, experts = family
    argv = merge_argv(base, experts, tmp_path / "out", "--param", param)
    assert_refused(*run_cli(argv, capsys), match)


def test_duplicate_experts_need_consent(family, tmp_path, capsys):
    _, base, experts = family
    twice = [experts[0], experts[1], Path(str(experts[0]) + "/")]
    assert_refused(*run_cli(merge_argv(base, twice, tmp_path / "a"), capsys), "is given twice")
    code, err = run_cli(
        merge_argv(base, twice, tmp_path / "b", "--allow-duplicate-experts"), capsys
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "case,match",
    [
        ("shape", "is torch.float32[127, 127], but model.layers.0.self_attn"),
        ("nonfinite", "holds nan/inf values"),
        ("missing", "has no input Gram"),
        ("meta", "stats.json is not valid JSON"),
    ],
)
def test_bad_statistics_are_named_before_merging(family, stats_dirs, tmp_path, capsys, case, match):
    _, base, experts = family
    grams, _ = stats_dirs
    bad = tmp_path / "bad_stats"
    shutil.copytree(grams, bad)
    layer = bad / "layer-000.safetensors"
    ts = load_file(layer)
    key = next(k for k in ts if k.endswith("attn_in"))
    if case == "shape":
        ts[key] = ts[key][:-1, :-1].contiguous()
    elif case == "nonfinite":
        ts[key][0, 0] = float("inf")
    elif case == "missing":
        ts.pop(key)
    if case == "meta":
        (bad / STATS_JSON).write_text("{")
    else:
        save_file(ts, layer, metadata={"format": "pt"})
    out = tmp_path / "out"
    stats = ["--stats", grams, "--stats", bad, "--stats", grams]
    code, err = run_cli(merge_argv(base, experts, out, *stats, method="regmean"), capsys)
    assert_refused(code, err, match)
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"\xff\xfe\x00bad", "is not UTF-8"),
        (b'{"prompt": "   "}\n', "non-empty 'prompt'"),
        (b'{"messages": [{"role": "user"}]}\n', "non-empty 'prompt'"),
        (b"\n\n", "holds no prompts"),
    ],
)
def test_bad_prompts_for_statistics(family, tmp_path, capsys, content, match):
    _, base, _ = family
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(content)
    argv = [
        "stats",
        "--model",
        base,
        "--prompts",
        prompts,
        "--output",
        tmp_path / "s",
        "--device",
        "cpu",
    ]
    assert_refused(*run_cli(argv, capsys), match)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--batch-size", "--max-tokens", "--max-prompts"])
def test_statistics_counts_must_be_positive(family, tmp_path, capsys, flag):
    _, base, _ = family
    argv = ["stats", "--model", base, "--prompts", "p", "--output", tmp_path / "s", flag, "0"]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "expected a positive integer" in err and "Traceback" not in err


# --- no leaks --------------------------------------------------------------------------------


def _slow_family(family, tmp_path) -> tuple[Path, list[Path]]:
    """Base and 3 experts with 24 768 x 768 block matrices: TSV takes seconds on them (a wide
    window to stop it in, even on a loaded machine)."""
    _, base, experts = family
    g = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(24)]
    w0 = {n: torch.randn(768, 768, generator=g).to(torch.bfloat16) for n in names}
    out = []
    for i, src in enumerate([base, *experts]):
        folder = tmp_path / "slow" / src.name
        shutil.copytree(src, folder)
        (folder / "model.safetensors").unlink()
        ts = (
            w0
            if i == 0
            else {
                n: (w.float() + 0.01 * torch.randn(w.shape, generator=g)).to(torch.bfloat16)
                for n, w in w0.items()
            }
        )
        save_file(ts, folder / "model.safetensors", metadata={"format": "pt"})
        out.append(folder)
    return out[0], out[1:]


def _slow_merge(base, experts, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "merges"] + [
        str(a) for a in merge_argv(base, experts, out, method="tsv")
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(parent: Path, proc, timeout=60.0) -> None:
    t0 = time.time()
    while not any(p.is_dir() for p in parent.glob(".out.partial-*")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - t0 < timeout, "the merge never started writing"
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_merge_leaves_nothing_after_the_rerun(family, tmp_path, sig):
    base, experts = _slow_family(family, tmp_path)
    before = tree_hash(tmp_path / "slow")
    out = tmp_path / "out"
    proc = _slow_merge(base, experts, out)
    _wait_for_partial(tmp_path, proc)
    proc.send_signal(sig)
    rc = proc.wait(60)
    if sig == signal.SIGTERM:  # cleaned up like Ctrl-C, at once
        assert rc == 128 + signal.SIGTERM, proc.stderr.read()
        assert not leftovers(tmp_path)
    else:  # the partial survives a SIGKILL, but it is recognised as abandoned
        assert leftovers(tmp_path)
    assert not out.exists()
    cmd = [sys.executable, "-m", "merges"] + [str(a) for a in merge_argv(base, experts, out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "merge.json").exists() and not leftovers(tmp_path)
    assert tree_hash(tmp_path / "slow") == before


def test_a_live_writers_partial_is_left_alone(tmp_path):
    from mergeeval.outputs import atomic_dir, sweep_stale

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
        assert sweep_stale(target) == [] and tmp.exists()
    assert (target / "x").read_text() == "1" and not leftovers(tmp_path)


def test_disk_full_is_one_message_and_leaves_nothing(family, tmp_path):
    _, base, experts = family
    out = tmp_path / "out"

    def small_files():  # writes past 64 kB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = [sys.executable, "-m", "merges"] + [str(a) for a in merge_argv(base, experts, out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=small_files)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "free space" in done.stderr
    assert not out.exists() and not leftovers(tmp_path)


# --- evaluation command lines ----------------------------------------------------------------


def run_evals(argv, capsys):
    from evals.cli import main

    old = signal.getsignal(signal.SIGTERM)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, old)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--limit", "0"], "expected a positive integer"),
        (["--limit", "-1"], "expected a positive integer"),
        (["--data", "aime42=x.jsonl"], "'aime42' is not a benchmark generated here"),
        (["--data", "aime24"], "expects NAME=PATH"),
    ],
)
def test_generate_rejects_misuse_before_starting_vllm(family, tmp_path, capsys, extra, match):
    _, base, _ = family
    argv = ["generate", "--model", base, "--suite", "smoke", "--output", tmp_path / "s", *extra]
    code, err = run_evals(argv, capsys)
    assert code == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()


def test_generate_output_never_lands_in_the_model(family, capsys):
    root, base, _ = family
    before = tree_hash(root)
    argv = ["generate", "--model", base, "--suite", "smoke", "--output", base / "samples"]
    assert_refused(*run_evals(argv, capsys), "lies inside the model")
    assert tree_hash(root) == before


def test_corrupt_gzip_samples_are_one_message(tmp_path, capsys):
    samples = tmp_path / "aime24.jsonl.gz"
    samples.write_bytes(b"\x1f\x8b\x08\x00garbage")
    argv = ["score", "--benchmark", "aime24", "--samples", samples, "--output", tmp_path / "s.json"]
    argv += ["--source", "fixture"]
    assert_refused(*run_evals(argv, capsys), "not a valid gzip-compressed JSONL file")
    assert not (tmp_path / "s.json").exists()


def test_debug_shows_the_traceback(family, tmp_path):
    _, base, experts = family
    cmd = [sys.executable, "-m", "merges"] + [
        str(a) for a in merge_argv(base, experts, base, "--debug")
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_score_never_overwrites_its_samples(tmp_path, capsys):
    from evals.samples import write_samples

    samples = tmp_path / "aime24.jsonl.gz"
    write_samples(samples, [{"id": 0, "completions": ["Answer: 1"]}])
    before = samples.read_bytes()
    argv = ["score", "--benchmark", "aime24", "--samples", samples, "--output", samples]
    assert_refused(*run_evals(argv + ["--source", "fixture"], capsys), "is the samples file")
    (tmp_path / "dir").mkdir()
    argv[-1] = tmp_path / "dir"
    assert_refused(*run_evals(argv + ["--source", "fixture"], capsys), "is a folder")
    assert samples.read_bytes() == before


def test_malformed_meta_is_one_message(tmp_path, capsys):
    from evals.samples import write_samples

    samples = tmp_path / "aime24.jsonl.gz"
    write_samples(samples, [{"id": 0, "completions": ["Answer: 1"]}])
    (tmp_path / "aime24.meta.json").write_text('{"limit": ')
    argv = ["score", "--benchmark", "aime24", "--samples", samples, "--output", tmp_path / "s.json"]
    assert_refused(*run_evals(argv, capsys), "aime24.meta.json is not a JSON object")
    assert not (tmp_path / "s.json").exists()
