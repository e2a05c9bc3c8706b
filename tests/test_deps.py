"""Which project files a merge depends on (read off the imports by hand here), and that
merge.json records them."""

import json

import pytest

from merges.deps import code_record

ENGINE = {
    "merges/__init__.py",
    "merges/adapter.py",
    "merges/adapter_out.py",
    "merges/device.py",
    "merges/checks.py",
    "merges/engine.py",
    "merges/errors.py",
    "merges/grams.py",
    "merges/io.py",
    "merges/policy.py",
    "merges/provenance.py",
    "merges/registry.py",
    "merges/spec.py",
    "merges/stream.py",
    "merges/unit_merge.py",
    "merges/deps.py",
    # the shared core the engine uses: errors, guarded atomic outputs, provenance records, the
    # bounded YAML loader (spec files)
    "mergeeval/errors.py",
    "mergeeval/outputs.py",
    "mergeeval/records.py",
    "mergeeval/yamlio.py",
}


@pytest.mark.parametrize(
    "method,own",
    [
        ("merges.methods.average", {"merges/methods/average.py"}),
        (
            "merges.methods.dare",
            {
                "merges/methods/dare.py",
                "merges/methods/ties.py",
                "merges/gta.py",
                "merges/factor_merge.py",
            },
        ),
        (
            "merges.methods.dare_ties",
            {
                "merges/methods/dare_ties.py",
                "merges/methods/dare_linear.py",
                "merges/methods/dare.py",
                "merges/methods/ties.py",
                "merges/gta.py",
                "merges/factor_merge.py",
            },
        ),
        ("merges.methods.slerp", {"merges/methods/slerp.py"}),
        ("merges.methods.tsv", {"merges/methods/tsv.py", "merges/linalg.py"}),
        ("merges.methods.regmean", {"merges/methods/regmean.py", "merges/linalg.py"}),
        ("merges.methods.iso_c", {"merges/methods/iso_c.py", "merges/linalg.py"}),
        ("merges.methods.ace", {"merges/methods/ace.py", "merges/linalg.py"}),
    ],
)
def test_a_merge_depends_on_the_engine_and_its_own_imports(method, own):
    files = set(code_record(method)["files"])
    assert files == ENGINE | own


def test_code_record_follows_the_content_of_every_file(monkeypatch):
    from pathlib import Path

    before = {m: code_record(f"merges.methods.{m}")["sha256"] for m in ("tsv", "average")}
    orig = Path.read_bytes

    def edited(self):
        return orig(self) + (b"\n# edited" if self.name == "linalg.py" else b"")

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert code_record("merges.methods.tsv")["sha256"] != before["tsv"]
    assert code_record("merges.methods.average")["sha256"] == before["average"]


def test_merge_json_records_the_code(tiny_family, tmp_path):
    from merges.cli import main

    base, experts = tiny_family
    out = tmp_path / "m"
    args = ["run", "--method", "dare", "--base", base, "--output", out, "--quiet"]
    for e in experts:
        args += ["--expert", e]
    assert main([str(a) for a in args]) == 0
    record = json.loads((out / "merge.json").read_text())
    assert record["code"] == code_record("merges.methods.dare")
    assert "merges/methods/ties.py" in record["code"]["files"]
