"""`python -m merges run --spec FILE` and `--generation-config-from`: a spec file gives the same
bytes as the flags, bad spec files stop with one `error:` line naming the field, and the merged
folder's generation_config.json comes from the base, the tokenizer source or nowhere."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from merges.errors import MergeInputError
from merges.spec import load_spec_file
from tests.test_hardening import run_cli  # noqa: E402

GEN = "generation_config.json"


@pytest.fixture
def family(tiny_family, tmp_path, monkeypatch):
    """A private copy of the tiny family under tmp/models, with generation configs that differ
    between the base and the Math expert; the current directory is tmp."""
    base, experts = tiny_family
    root = tmp_path / "models"
    for src in (base, *experts):
        shutil.copytree(src, root / src.name)
    for name, extra in (("base", {"max_new_tokens": 11}), ("math", {"max_new_tokens": 22})):
        path = root / name / GEN
        path.write_text(json.dumps(json.loads(path.read_text()) | extra, indent=2) + "\n")
    monkeypatch.chdir(tmp_path)
    return Path("models/base"), [Path("models") / e.name for e in experts]


def flags(base, experts, out, *extra):
    argv = ["run", "--method", "ties", "--base", base, "--output", out, "--device", "cpu"]
    argv += [a for e in experts for a in ("--expert", e)]
    return argv + ["--param", "density=0.5", "--dtype", "float32", "--quiet", *extra]


def spec_dict(base, experts, out, **extra):
    return {
        "method": "ties",
        "base": str(base),
        "experts": [str(e) for e in experts],
        "output": str(out),
        "params": {"density": 0.5},
        "device": "cpu",
        "dtype": "float32",
        **extra,
    }


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "merge.json"}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_spec_file_gives_the_same_bytes_as_flags(family, capsys, fmt):
    base, experts = family
    assert run_cli(flags(base, experts, "by-flags"), capsys)[0] == 0
    spec = Path(f"merge.{fmt}")
    data = spec_dict(base, experts, "by-spec")  # relative paths: relative to the current dir
    spec.write_text(yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data))
    assert run_cli(["run", "--spec", spec, "--quiet"], capsys)[0] == 0
    a, b = files(Path("by-flags")), files(Path("by-spec"))
    assert a == b and any(n.endswith(".safetensors") for n in a)
    ra = json.loads(Path("by-flags/merge.json").read_text())
    rb = json.loads(Path("by-spec/merge.json").read_text())
    for r in (ra, rb):
        r.pop("timings")
    assert ra.pop("spec_file") is None
    assert rb.pop("spec_file")["path"] == str(spec.resolve())
    assert ra == rb


@pytest.mark.parametrize(
    "change,field",
    [
        ({"expertz": ["models/math"]}, "expertz"),
        ({"force": "yes"}, "force"),
        ({"experts": "models/math"}, "experts"),
        ({"params": {"density": [[0.5]]}}, "params.density"),
        ({"dtype": "float16"}, "dtype"),
        ({"generation_config_from": "expert"}, "generation_config_from"),
        ({"output": None}, "output"),
    ],
)
def test_bad_spec_file_is_one_error_naming_the_field(family, capsys, change, field):
    base, experts = family
    data = spec_dict(base, experts, "out") | change
    Path("bad.yaml").write_text(yaml.safe_dump(data))
    code, err = run_cli(["run", "--spec", "bad.yaml"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: spec file bad.yaml")
    assert repr(field) in lines[0] and "Traceback" not in err
    assert not Path("out").exists()


def test_missing_field_and_malformed_files(family, capsys):
    base, experts = family
    data = spec_dict(base, experts, "out")
    del data["method"]
    Path("a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(MergeInputError, match=r"a.yaml: field 'method' is required"):
        load_spec_file(Path("a.yaml"))
    Path("b.yaml").write_text("method: [ties\n")
    with pytest.raises(MergeInputError, match=r"b.yaml is not valid YAML/JSON"):
        load_spec_file(Path("b.yaml"))
    Path("c.yaml").write_text("- ties\n")
    with pytest.raises(MergeInputError, match=r"c.yaml must hold one mapping"):
        load_spec_file(Path("c.yaml"))
    with pytest.raises(MergeInputError, match=r"spec file none.yaml not found"):
        load_spec_file(Path("none.yaml"))


def test_spec_and_flags_do_not_mix(family, capsys):
    base, experts = family
    Path("s.yaml").write_text(yaml.safe_dump(spec_dict(base, experts, "out")))
    code, err = run_cli(["run", "--spec", "s.yaml", "--method", "ties"], capsys)
    assert code == 2 and "--spec s.yaml sets every merge input; drop --method" in err
    code, err = run_cli(["run", "--spec", "s.yaml", "--force", "--param", "k=1"], capsys)
    assert code == 2 and "drop --param, --force" in err
    code, err = run_cli(["run", "--method", "ties", "--base", base], capsys)
    assert code == 2 and "run needs --expert, --output (or --spec FILE" in err
    assert not Path("out").exists()


@pytest.mark.parametrize("choice", ["base", "tokenizer", "none", None])
def test_generation_config_from(family, capsys, choice):
    base, experts = family
    out = Path(f"gen-{choice}")
    extra = ["--generation-config-from", choice] if choice else []
    assert run_cli(flags(base, experts, out, *extra), capsys)[0] == 0
    want = {"base": base, None: base, "tokenizer": experts[0], "none": None}[choice]
    record = json.loads((out / "merge.json").read_text())["generation_config"]
    assert record["from"] == (choice or "base")
    if want is None:
        assert not (out / GEN).exists() and record["file"] is None
    else:
        assert (out / GEN).read_bytes() == (want / GEN).read_bytes()
        assert record["file"]["path"] == str((want / GEN).resolve())
    # the tokenizer and chat template still come from the tokenizer source (the first expert)
    assert (out / "tokenizer.json").read_bytes() == (experts[0] / "tokenizer.json").read_bytes()


def test_generation_config_tokenizer_falls_back_to_the_base(family, capsys):
    base, experts = family
    (experts[0] / GEN).unlink()
    out = Path("fallback")
    assert (
        run_cli(flags(base, experts, out, "--generation-config-from", "tokenizer"), capsys)[0] == 0
    )
    assert (out / GEN).read_bytes() == (base / GEN).read_bytes()


def test_spec_file_sets_generation_config_from(family, capsys):
    base, experts = family
    data = spec_dict(base, experts, "gen", generation_config_from="none", force=True)
    Path("g.json").write_text(json.dumps(data))
    assert run_cli(["run", "--spec", "g.json", "--quiet"], capsys)[0] == 0
    assert not Path("gen", GEN).exists()
    assert run_cli(["run", "--spec", "g.json", "--quiet"], capsys)[0] == 0  # force: replaced
