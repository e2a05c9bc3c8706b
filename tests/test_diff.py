"""`python -m merges diff`: figures against independent fp64 formulas, exact bf16 ulps, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import merges.diff
from merges.cli import main
from merges.io import INDEX_NAME

ROOT = Path(__file__).resolve().parents[1]


def save(folder: Path, tensors: dict, shards: int = 1) -> Path:
    """A model folder: model.safetensors, or `shards` files plus the index."""
    folder.mkdir(parents=True)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return folder
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, str(folder / fname))
        weight_map.update(dict.fromkeys(part, fname))
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def bf16(*bits: int) -> torch.Tensor:
    """bf16 values from their 16-bit patterns."""
    return torch.tensor(
        [b - (1 << 16) if b >= 1 << 15 else b for b in bits], dtype=torch.int16
    ).view(torch.bfloat16)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float32).numpy().astype(np.float64)


def family(dtype: torch.dtype, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Base, A and B: A and B change some entries of some tensors, `same` is untouched."""
    g = torch.Generator().manual_seed(seed)
    base = {
        "big": torch.randn(37, 11, generator=g).to(dtype),
        "small": torch.randn(5, generator=g).to(dtype),
        "same": torch.randn(4, 3, generator=g).to(dtype),
    }
    a = {k: v + (0.01 * torch.randn(v.shape, generator=g)).to(dtype) for k, v in base.items()}
    a["same"] = base["same"].clone()
    b = {k: v.clone() for k, v in a.items()}
    b["big"][::3] += (0.05 * torch.randn(b["big"][::3].shape, generator=g)).to(dtype)
    b["small"][1] -= 0.5
    return {"base": base, "a": a, "b": b}


def run(tmp_path, *args) -> tuple[int, dict]:
    out = tmp_path / "diff.json"
    rc = main(["diff", *map(str, args), "--json", str(out)])
    return rc, json.loads(out.read_text())


def by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["tensors"]}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_figures_match_fp64_formulas(tmp_path, monkeypatch, dtype, capsys):
    monkeypatch.setattr(merges.diff, "BLOCK_ELEMENTS", 40)  # several row blocks per tensor
    m = family(dtype)
    a, b = save(tmp_path / "a", m["a"]), save(tmp_path / "b", m["b"])
    rc, report = run(tmp_path, a, b)
    assert rc == 1 and report["reference"] == "B"
    rows = by_name(report)
    for name in m["a"]:
        x, y = f64(m["a"][name]), f64(m["b"][name])
        r = rows[name]
        assert r["max_abs"] == pytest.approx(np.abs(x - y).max(), rel=1e-12, abs=0)
        want_rel = np.linalg.norm(x - y) / np.linalg.norm(y)
        assert r["rel_frobenius"] == pytest.approx(want_rel, rel=1e-12, abs=0)
        assert r["share_changed"] == pytest.approx(np.mean(x != y), rel=1e-12, abs=0)
        assert r["changed"] == int(np.sum(x != y))
    assert rows["same"]["changed"] == 0 and rows["same"]["rel_frobenius"] == 0.0
    assert rows["big"]["over_tolerance"] and not rows["same"]["over_tolerance"]
    assert report["summary"]["identical"] == 1 and report["summary"]["changed"] == 2
    # the table lists the changed tensors, worst (largest relative difference) first
    table = capsys.readouterr().out
    assert "| same |" not in table
    worst = max(("big", "small"), key=lambda n: rows[n]["rel_frobenius"])
    other = "small" if worst == "big" else "big"
    assert table.index(f"| {worst} |") < table.index(f"| {other} |")
    assert "1 of 3 tensors identical, 2 changed, 2 over the tolerance" in table


def test_bf16_ulps_exact_on_hand_picked_values(tmp_path):
    pairs = {  # name: (A bits, B bits, ulps)
        "one_vs_next": (0x3F80, 0x3F81, 1),  # 1.0 vs the next bf16 above 1.0
        "one_vs_two_up": (0x3F80, 0x3F82, 2),
        "neg_one_vs_next": (0xBF80, 0xBF81, 1),  # -1.0 vs the next bf16 below it
        "tiny_across_zero": (0x0001, 0x8001, 2),  # +smallest subnormal vs -smallest
        "tiny_vs_zero": (0x0001, 0x0000, 1),
        "plus_minus_zero": (0x0000, 0x8000, 0),  # +0 and -0 are the same value
        "one_vs_minus_one": (0x3F80, 0xBF80, 2 * 0x3F80),  # sign flip: every value in between
        "max_vs_inf": (0x7F7F, 0x7F80, 1),
        "binade_edge": (0x3FFF, 0x4000, 1),  # largest bf16 below 2 vs 2.0
    }
    a = save(tmp_path / "a", {n: bf16(p[0]) for n, p in pairs.items()})
    b = save(tmp_path / "b", {n: bf16(p[1]) for n, p in pairs.items()})
    rc, report = run(tmp_path, a, b)
    rows = by_name(report)
    assert {n: rows[n]["max_bf16_ulps"] for n in pairs} == {n: p[2] for n, p in pairs.items()}
    assert not any(r["ulps_rounded"] for r in rows.values())
    assert rows["plus_minus_zero"]["changed"] == 0  # -0 == +0 as values
    assert report["summary"]["max_bf16_ulps"] == 2 * 0x3F80
    assert rc == 1


def diff_module(a, b) -> subprocess.CompletedProcess:
    """`python -m merges diff A B` in a process of its own."""
    cmd = [sys.executable, "-m", "merges", "diff", str(a), str(b)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_identical_folders_exit_0_through_the_module(tmp_path):
    m = family(torch.bfloat16)
    a, b = save(tmp_path / "a", m["a"]), save(tmp_path / "b", m["a"])
    p = diff_module(a, b)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "3 of 3 tensors identical, 0 changed, 0 over the tolerance\n"


def test_changed_tensor_exits_1_and_is_named_through_the_module(tmp_path):
    m = family(torch.float32)
    b = {k: v.clone() for k, v in m["a"].items()}
    b["small"][2] += 1e-3
    a, b = save(tmp_path / "a", m["a"]), save(tmp_path / "b", b)
    p = diff_module(a, b)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("| tensor |") and lines[2].startswith("| small | 5 | float32 |")
    assert len(lines) == 5 and "2 of 3 tensors identical, 1 changed, 1 over" in lines[-1]


def test_tolerance_flags(tmp_path):
    base = torch.tensor([1.0, 2.0, -3.0, 0.5], dtype=torch.bfloat16)
    b = base.clone().view(torch.int16)
    b[0] += 1  # 1 ulp
    b[3] += 3  # 3 ulps
    a_dir, b_dir = (
        save(tmp_path / "a", {"w": base}),
        save(tmp_path / "b", {"w": b.view(torch.bfloat16)}),
    )
    rc, report = run(tmp_path, a_dir, b_dir)
    rel = report["tensors"][0]["rel_frobenius"]
    assert rc == 1 and report["tensors"][0]["max_bf16_ulps"] == 3 and 0 < rel < 1e-2
    assert run(tmp_path, a_dir, b_dir, "--max-rel", rel * 1.01)[0] == 0
    assert run(tmp_path, a_dir, b_dir, "--max-rel", rel * 0.99)[0] == 1
    assert run(tmp_path, a_dir, b_dir, "--max-ulps", 3)[0] == 0  # only the ulps tolerance applies
    assert run(tmp_path, a_dir, b_dir, "--max-ulps", 2)[0] == 1
    # every given tolerance must hold
    assert run(tmp_path, a_dir, b_dir, "--max-ulps", 3, "--max-rel", rel * 0.99)[0] == 1
    rc, report = run(tmp_path, a_dir, b_dir, "--max-ulps", 3, "--max-rel", 1)
    assert rc == 0 and report["tolerance"] == {"max_rel": 1.0, "max_ulps": 3}
    assert report["summary"]["changed"] == 1 and report["summary"]["over_tolerance"] == 0


def test_base_mode_is_relative_to_the_task_vector(tmp_path):
    m = family(torch.bfloat16, seed=1)
    a, b = save(tmp_path / "a", m["a"]), save(tmp_path / "b", m["b"])
    base = save(tmp_path / "base", m["base"])
    rc, report = run(tmp_path, a, b, "--base", base)
    assert rc == 1 and report["reference"] == "B - base" and report["base"] == str(base)
    rows = by_name(report)
    for name in ("big", "small"):
        x, y, w0 = f64(m["a"][name]), f64(m["b"][name]), f64(m["base"][name])
        dx, dy = x - w0, y - w0
        assert rows[name]["rel_frobenius"] == pytest.approx(
            np.linalg.norm(dx - dy) / np.linalg.norm(dy), rel=1e-12, abs=0
        )
        assert rows[name]["ref_norm"] == pytest.approx(np.linalg.norm(dy), rel=1e-12, abs=0)
        assert rows[name]["max_abs"] == pytest.approx(np.abs(dx - dy).max(), rel=1e-12, abs=0)
    # deltas are far smaller than the weights, so the same difference weighs more against them
    plain = by_name(run(tmp_path, a, b)[1])
    assert rows["big"]["rel_frobenius"] > 5 * plain["big"]["rel_frobenius"]


def test_sharded_folder_and_mismatched_dtype(tmp_path):
    m = family(torch.bfloat16)
    a = save(tmp_path / "a", m["a"], shards=2)
    b32 = {k: v.to(torch.float32) for k, v in m["a"].items()}  # same values, stored as fp32
    b = save(tmp_path / "b", b32)
    rc, report = run(tmp_path, a, b)
    assert rc == 0
    assert report["summary"]["identical"] == 3
    assert report["summary"]["dtype_differs"] == ["big", "same", "small"]
    assert all(r["ulps_rounded"] and r["dtype_b"] == "float32" for r in report["tensors"])
    b32["big"][4, 5] += 0.25
    b2 = save(tmp_path / "b2", b32, shards=3)
    rc, report = run(tmp_path, a, b2)
    big = by_name(report)["big"]
    assert rc == 1 and big["changed"] == 1 and big["share_changed"] == pytest.approx(1 / (37 * 11))
    assert big["max_abs"] == pytest.approx(0.25, abs=1e-6)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_exits_2_with_one_message(tmp_path, capsys):
    m = family(torch.float32)
    a = save(tmp_path / "a", m["a"])
    missing = {k: v for k, v in m["a"].items() if k != "small"}
    assert main(["diff", str(a), str(save(tmp_path / "b_missing", missing))]) == 2
    msg = _error(capsys)
    assert "only in A: small" in msg and "one architecture" in msg

    reshaped = dict(m["a"], big=m["a"]["big"].reshape(11, 37).contiguous())
    assert main(["diff", str(a), str(save(tmp_path / "b_shape", reshaped))]) == 2
    assert "shapes differ: big A [37, 11] vs B [11, 37]" in _error(capsys)

    base_missing = save(tmp_path / "base_missing", missing)
    assert main(["diff", str(a), str(a), "--base", str(base_missing)]) == 2
    assert "--base vs A: only in A: small" in _error(capsys)

    weights = a / "model.safetensors"
    assert main(["diff", str(weights), str(a)]) == 2
    assert f"diff A {weights} is not a folder; give a model folder" in _error(capsys)
    assert main(["diff", str(a), str(tmp_path / "nowhere")]) == 2
    assert "diff B " in (msg := _error(capsys)) and "does not exist" in msg
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    assert main(["diff", str(a), str(adapter)]) == 2
    assert "diff B: " in (msg := _error(capsys)) and "is a PEFT LoRA adapter" in msg
    (tmp_path / "empty").mkdir()
    assert main(["diff", str(a), str(a), "--base", str(tmp_path / "empty")]) == 2
    assert "diff --base: " in (msg := _error(capsys)) and "model.safetensors" in msg
    assert main(["diff", str(a), str(a), "--json", str(a / "diff.json")]) == 2
    assert "--json" in _error(capsys) and not (a / "diff.json").exists()
