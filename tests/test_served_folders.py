"""A truncated or corrupt model or adapter folder is one error naming the folder, the file and the
fix, from the generation entry points, before vLLM is imported for rendering or an engine starts
(evals.folders)."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from evals.errors import EvalInputError
from evals.folders import check_adapter_folder, check_model_folder
from evals.generate import generate, generate_batch

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "demofamily" / "models" / "base"
MATH = ROOT / "demofamily" / "models" / "math"  # the base has no chat template; the Math expert's
LORA = ROOT / "demofamily" / "models" / "lora_math"
SIZE = (BASE / "model.safetensors").stat().st_size


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """The check comes first: neither an engine nor vLLM's prompt rendering may be reached."""

    def started(*a, **k):
        raise AssertionError("reached vLLM before the folder check")

    monkeypatch.setattr("evals.engine._start", started)
    monkeypatch.setattr("evals.generate._render", started)


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def refused(model: Path, out: Path, match: str, **kw) -> str:
    """generate() raises one EvalInputError matching `match` (a literal) and writes nothing."""
    with pytest.raises(EvalInputError) as e:
        generate(model, "demo", out, template_from=MATH, **kw)
    msg = str(e.value)
    assert match in msg, msg
    assert "\n" not in msg and msg.count(" is damaged: ") == 1 and not out.exists()
    return msg


def test_a_truncated_merged_folder_is_named_with_its_file_and_the_fix(tmp_path):
    model = copy(BASE, tmp_path / "ta")
    (model / "merge.json").write_text("{}")  # made by a merge
    os.truncate(model / "model.safetensors", SIZE - 1000)
    msg = refused(
        model,
        tmp_path / "s",
        f"model folder {model} is damaged: {model / 'model.safetensors'} is {SIZE - 1000} bytes "
        f"but its header says its data ends at byte {SIZE} (truncated); delete the folder so that "
        "the pipeline merges it again (or rerun `python -m merges run` with --force)",
    )
    assert msg.count(str(model)) == 2


def test_a_truncated_download_and_a_copy_say_how_they_are_made_again(tmp_path):
    hub = copy(BASE, tmp_path / "hub")
    (hub / "source.json").write_text(json.dumps({"repo_id": "allenai/x", "revision": "main"}))
    os.truncate(hub / "model.safetensors", 100)  # inside the header
    refused(
        hub,
        tmp_path / "s",
        f"{hub / 'model.safetensors'} is 100 bytes but its header length says ",
    )
    refused(hub, tmp_path / "s", "the pipeline downloads it again (or rerun `python -m merges")
    plain = copy(BASE, tmp_path / "plain")
    os.truncate(plain / "model.safetensors", 3)
    refused(
        plain,
        tmp_path / "s",
        "model.safetensors is 3 bytes, too short for a header; replace the folder with a "
        "complete copy (or delete it so the pipeline makes it again)",
    )


def test_trailing_bytes_and_a_corrupt_header_are_named(tmp_path):
    extra = copy(BASE, tmp_path / "extra")
    with open(extra / "model.safetensors", "ab") as f:
        f.write(b"\0" * 16)
    refused(extra, tmp_path / "s", f"data ends at byte {SIZE} (trailing bytes)")

    bad = copy(BASE, tmp_path / "bad")
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[9] = 0xFF  # a byte of the JSON header
    (bad / "model.safetensors").write_bytes(bytes(data))
    refused(bad, tmp_path / "s", f"{bad / 'model.safetensors'} has a header that is not JSON (")

    # a header whose offsets still cover the file but disagree with a tensor's dtype × shape:
    # the safetensors library's own validation, named
    wrong = copy(BASE, tmp_path / "wrong")
    path = wrong / "model.safetensors"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2)
    header[name]["shape"] = [header[name]["shape"][1], header[name]["shape"][0] + 1]
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n :])
    refused(wrong, tmp_path / "s", f"{path} has an invalid header (")


def test_a_broken_config_is_named(tmp_path):
    model = copy(BASE, tmp_path / "cfg")
    (model / "config.json").write_text('{"model_type": "llama", ')
    refused(model, tmp_path / "s", f"{model / 'config.json'} is not valid JSON (")
    (model / "config.json").write_text("[]")
    refused(model, tmp_path / "s", f"{model / 'config.json'} is not a JSON object")
    (model / "config.json").write_text((BASE / "config.json").read_text())
    (model / "tokenizer.json").write_text((BASE / "tokenizer.json").read_text()[:5000])
    refused(model, tmp_path / "s", f"{model / 'tokenizer.json'} is not valid JSON (")


def sharded(folder: Path) -> Path:
    """BASE as two shards and an index, as large models are saved (bytes copied, no torch)."""
    shutil.copytree(BASE, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    raw = (BASE / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    names = sorted(header)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), 1):
        file = f"model-0000{i}-of-00002.safetensors"
        head, data = {"__metadata__": {"format": "pt"}}, b""
        for k in part:
            start, end = header[k]["data_offsets"]
            head[k] = header[k] | {"data_offsets": [len(data), len(data) + end - start]}
            data += raw[8 + n + start : 8 + n + end]
        text = json.dumps(head).encode()
        (folder / file).write_bytes(len(text).to_bytes(8, "little") + text + data)
        weight_map |= dict.fromkeys(part, file)
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def test_a_shard_the_index_names_must_exist_and_hold_its_tensors(tmp_path):
    model = sharded(tmp_path / "sharded")
    check_model_folder(model)  # whole: passes
    index = model / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    moved = next(k for k, v in weight_map.items() if v.startswith("model-00001"))
    index.write_text(
        json.dumps({"weight_map": weight_map | {moved: "model-00002-of-00002.safetensors"}})
    )
    refused(
        model,
        tmp_path / "s",
        f"{model / 'model-00002-of-00002.safetensors'} lacks tensor {moved} that "
        "model.safetensors.index.json lists",
    )
    index.write_text(json.dumps({"weight_map": weight_map}))
    (model / "model-00002-of-00002.safetensors").unlink()
    refused(
        model,
        tmp_path / "s",
        f"model folder {model} is damaged: {index} names model-00002-of-00002.safetensors, "
        "which is missing",
    )
    index.write_text('{"weight_map": ')
    refused(model, tmp_path / "s", f"{index} is not valid JSON (")


def test_a_folder_without_weights_is_named(tmp_path):
    model = copy(BASE, tmp_path / "empty")
    (model / "model.safetensors").unlink()
    refused(model, tmp_path / "s", f"{model / 'model.safetensors'} is missing (no weights)")


def test_a_broken_adapter_or_its_base_is_named(tmp_path):
    base = copy(BASE, tmp_path / "base")
    adapter = copy(LORA, tmp_path / "lora")
    check_adapter_folder(adapter)
    weights = adapter / "adapter_model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size - 1)
    refused(
        adapter,
        tmp_path / "s",
        f"adapter folder {adapter} is damaged: {weights} is {size - 1} bytes but its header says "
        f"its data ends at byte {size} (truncated)",
        lora_base=base,
    )
    weights.write_bytes(b"\x02\0\0\0\0\0\0\0[]")
    refused(
        adapter, tmp_path / "s", f"{weights} has a header that is not a JSON object", lora_base=base
    )
    shutil.copy(LORA / "adapter_model.safetensors", weights)
    check_adapter_folder(adapter)
    os.truncate(base / "model.safetensors", SIZE // 2)
    refused(
        adapter,
        tmp_path / "s",
        f"model folder {base} is damaged: {base / 'model.safetensors'} is {SIZE // 2} bytes",
        lora_base=base,
    )


def test_a_batch_names_the_damaged_folder_and_serves_none(tmp_path):
    bad = copy(MATH, tmp_path / "bad")
    good = copy(MATH, tmp_path / "good")
    os.truncate(bad / "model.safetensors", SIZE - 8)
    request = tmp_path / "request.json"
    targets = [
        {"model": str(m), "output": str(tmp_path / "out" / m.name), "template": "paper"}
        for m in (bad, good)  # the bad one first: the good one's tokenizer loads transformers
    ]
    request.write_text(json.dumps({"suite": "demo", "targets": targets}))
    with pytest.raises(EvalInputError, match=f"model folder {bad} is damaged"):
        generate_batch(request, tmp_path / "manifest.json")
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "out" / "good").exists()


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path, capsys):
    from evals.cli import main

    model = copy(MATH, tmp_path / "ta")
    os.truncate(model / "model.safetensors", SIZE - 1)
    argv = ["generate", "--model", model, "--suite", "demo", "--output", tmp_path / "s"]
    old = signal.getsignal(signal.SIGTERM)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines == [
        f"error: model folder {model} is damaged: {model / 'model.safetensors'} is {SIZE - 1} "
        f"bytes but its header says its data ends at byte {SIZE} (truncated); replace the folder "
        "with a complete copy (or delete it so the pipeline makes it again)"
    ], err
    assert not (tmp_path / "s").exists()
