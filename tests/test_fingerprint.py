"""Merged-weight fingerprints: the norm is the delta's Frobenius norm, the projections are linear in
the delta with the Gaussian variance the estimate relies on, the hash is the stored bytes', and the
comparison names what moved (checked against formulas written here, not against the code)."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from merges.cli import main
from merges.fingerprint import fingerprint
from merges.fingerprint_check import (
    TOLERANCE,
    K,
    collect,
    compare,
    compare_collections,
    relative_change,
)
from merges.fingerprint_check import main as check_main

SHAPES = {"embed.weight": (40, 16), "layer.0.q.weight": (64, 64), "norm.weight": (16,)}


def folder(path, tensors: dict[str, torch.Tensor]):
    path.mkdir(parents=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, path / "model.safetensors")
    return path


@pytest.fixture
def base_delta():
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    delta = {n: 0.05 * torch.randn(s, generator=g) for n, s in SHAPES.items()}
    return base, delta


def merged(tmp_path, name, base, delta, scale=1.0, dtype=torch.float32):
    return folder(tmp_path / name, {n: (base[n] + scale * delta[n]).to(dtype) for n in base})


def test_norm_hash_and_linearity_against_formulas(tmp_path, base_delta):
    base, delta = base_delta
    b = folder(tmp_path / "base", base)
    one = fingerprint(merged(tmp_path, "one", base, delta), b)["tensors"]
    two = fingerprint(merged(tmp_path, "two", base, delta, 2.0), b)["tensors"]
    raw = (tmp_path / "one/model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    data = raw[8 + int.from_bytes(raw[:8], "little") :]
    for n in SHAPES:
        stored = (base[n] + delta[n]).double() - base[n].double()
        assert one[n]["delta_norm"] == pytest.approx(float(stored.norm()), rel=1e-12)
        lo, hi = header[n]["data_offsets"]
        assert one[n]["sha256"] == hashlib.sha256(data[lo:hi]).hexdigest()
        # fp32 storage: the doubled delta's projections are twice the delta's (up to rounding)
        tol = 1e-5 * one[n]["delta_norm"]  # each stored entry is rounded to fp32
        assert two[n]["projection"] == pytest.approx([2 * p for p in one[n]["projection"]], abs=tol)
        assert len(one[n]["projection"]) == K


def test_projection_variance_is_the_squared_norm(tmp_path):
    """E[p_i^2] = ||delta||^2 for Gaussian projections: the mean of p_i^2 / ||delta||^2 over 300
    tensors x K projections is 1 within 4 standard errors (sd of a chi-square(1) is sqrt(2))."""
    g = torch.Generator().manual_seed(1)
    names = [f"t{i}.weight" for i in range(300)]
    delta = {n: torch.randn(8, 8, generator=g) for n in names}
    zero = {n: torch.zeros(8, 8) for n in names}
    fp = fingerprint(folder(tmp_path / "d", delta), folder(tmp_path / "z", zero))["tensors"]
    ratios = [p**2 / fp[n]["delta_norm"] ** 2 for n in names for p in fp[n]["projection"]]
    assert abs(sum(ratios) / len(ratios) - 1) < 4 * math.sqrt(2 / len(ratios))


def test_compare_names_what_moved(tmp_path, base_delta):
    base, delta = base_delta
    b = folder(tmp_path / "base", base)
    ref16 = fingerprint(merged(tmp_path, "ref16", base, delta, dtype=torch.bfloat16), b)
    same = fingerprint(merged(tmp_path, "same", base, delta, dtype=torch.bfloat16), b)
    assert compare(same, ref16)["status"] == "identical"

    # one entry one bf16 ulp away: other bits, far within the tolerance (64 x 64 entries)
    nudged = {n: (base[n] + delta[n]).to(torch.bfloat16) for n in base}
    q = nudged["layer.0.q.weight"].view(torch.int16)
    q[0, 0] += 1
    fp = fingerprint(folder(tmp_path / "ulp", nudged), b)
    res = compare(fp, ref16)
    assert res["status"] == "bits" and res["bit_differences"] == ["layer.0.q.weight"]

    ref = fingerprint(merged(tmp_path, "ref", base, delta), b)
    # a dropped rescale (delta x 1.1) moves every tensor by 0.1 (the norm alone says so)
    fp = fingerprint(merged(tmp_path, "scaled", base, delta, 1.1), b)
    res = compare(fp, ref)
    assert res["status"] == "moved" and set(res["moved"]) == set(SHAPES)
    assert all(r == pytest.approx(0.1, rel=1e-3) or r > 0.1 for r in res["moved"].values())

    # a sign flip keeps the norm; the projections move by about 2
    flipped = fingerprint(merged(tmp_path, "flip", base, delta, -1.0), b)
    assert all(relative_change(flipped["tensors"][n], ref["tensors"][n]) > 0.5 for n in SHAPES)

    # a missing tensor and another definition
    fewer = {**same, "tensors": {n: v for n, v in same["tensors"].items() if n != "norm.weight"}}
    res = compare(fewer, ref)
    assert res["status"] == "moved" and res["only_baseline"] == ["norm.weight"]
    assert compare({**same, "k": K + 1}, ref)["status"] == "incomparable"


def test_cli_fingerprint_collect_and_compare(tmp_path, base_delta, capsys):
    base, delta = base_delta
    b = folder(tmp_path / "base", base)
    ok = merged(tmp_path, "ok", base, delta, dtype=torch.bfloat16)
    bad = merged(tmp_path, "bad", base, delta, -1.0, dtype=torch.bfloat16)
    for mid, model in (("ta", ok), ("ties", ok)):
        assert main(["fingerprint", str(model), "--base", str(b), "--id", mid,
                     "-o", str(tmp_path / f"fp-{mid}.json")]) == 0  # fmt: skip
    files = [str(tmp_path / "fp-ta.json"), str(tmp_path / "fp-ties.json")]
    assert check_main(["collect", *files, "-o", str(tmp_path / "baseline.json")]) == 0
    baseline = str(tmp_path / "baseline.json")

    args = ["--base", str(b), "--baseline", baseline]
    assert main(["fingerprint", str(bad), *args, "--id", "ta", "-o", files[0]]) == 0
    out = capsys.readouterr().out
    assert "ta: MOVED" in out and "layer.0.q.weight" in out and "embed.weight" in out
    assert main(["fingerprint", str(bad), *args, "--id", "ta", "--strict", "-o", files[0]]) == 1
    assert main(["fingerprint", str(ok), *args, "--id", "ties", "-o", files[1]]) == 0
    assert "ties: identical to the baseline" in capsys.readouterr().out
    assert (
        main(["fingerprint", str(ok), *args, "--id", "dare", "-o", str(tmp_path / "x.json")]) == 0
    )
    assert "dare: no baseline fingerprint" in capsys.readouterr().out

    assert check_main(["collect", *files, "-o", str(tmp_path / "run.json")]) == 0
    assert main(["fingerprint-compare", str(tmp_path / "run.json"), baseline]) == 1
    out = capsys.readouterr().out
    assert out.startswith("1 of 2 merges moved") and "ta: MOVED" in out
    results = compare_collections(tmp_path / "run.json", tmp_path / "baseline.json", TOLERANCE)
    assert {m: r["status"] for m, r in results.items()} == {"ta": "moved", "ties": "identical"}
    assert set(collect([tmp_path / "fp-ta.json"])["merges"]) == {"ta"}


def test_a_malformed_baseline_is_one_error(tmp_path, base_delta, capsys):
    base, delta = base_delta
    b = folder(tmp_path / "base", base)
    bad = tmp_path / "baseline.json"
    bad.write_text('{"merges": {"ta": {"no": 1}}}')
    model = merged(tmp_path, "m", base, delta)
    rc = main(["fingerprint", str(model), "--base", str(b), "--id", "ta", "--baseline", str(bad),
               "-o", str(tmp_path / "out.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "baseline fingerprints" in err and "fingerprints.json" in err
    assert not (tmp_path / "out.json").exists()


def test_the_dag_path_merge_run_then_a_check_without_torch(tmp_path, capsys):
    """`merges run --fingerprint` writes the raw fingerprint; `merges.fingerprint_check check`
    (no torch import) compares it; both agree with `merges fingerprint` on the same folder."""
    models = Path(__file__).resolve().parents[1] / "demofamily/models"
    base, expert = models / "base", models / "math"
    raw, out = tmp_path / "raw.json", tmp_path / "ta.json"
    args = ["run", "--method", "task_arithmetic", "--base", str(base), "--expert", str(expert),
            "--output", str(tmp_path / "ta"), "--quiet", "--fingerprint", str(raw)]  # fmt: skip
    assert main(args) == 0
    assert check_main(["check", str(raw), "--id", "ta", "-o", str(out)]) == 0
    direct = fingerprint(tmp_path / "ta", base)
    assert json.loads(out.read_text())["fingerprint"] == direct
    assert (
        f"ta: fingerprinted ({len(direct['tensors'])} tensors), no baseline"
        in capsys.readouterr().out
    )
    code = "import sys, merges.fingerprint_check; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
