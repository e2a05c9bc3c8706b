"""The streaming safetensors reader/writer against the safetensors library itself."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from merges.errors import MergeInputError
from merges.io import INDEX_NAME, Checkpoint, ShardedWriter


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(5, 3, generator=g).to(torch.bfloat16),
        "b.bias": torch.randn(7, generator=g),
        "c.ids": torch.arange(4, dtype=torch.int64),
        "d.scalar": torch.tensor(2.5, dtype=torch.float16),
    }


@pytest.mark.parametrize("max_shard_bytes", [10**9, 40])
def test_writer_output_reads_back_with_safetensors(tmp_path, max_shard_bytes):
    ts = _tensors()
    w = ShardedWriter(
        tmp_path, [(k, v.dtype, tuple(v.shape)) for k, v in ts.items()], max_shard_bytes
    )
    for name in w.order:
        w.write(name, ts[name])
    w.close()
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    if max_shard_bytes == 40:
        assert len(files) > 1
        index = json.loads((tmp_path / INDEX_NAME).read_text())
        assert set(index["weight_map"]) == set(ts) and set(index["weight_map"].values()) == set(
            files
        )
    else:
        assert files == ["model.safetensors"] and not (tmp_path / INDEX_NAME).exists()
    seen = {}
    for f in files:
        with safe_open(tmp_path / f, framework="pt") as h:
            assert h.metadata() == {"format": "pt"}
            for k in h.keys():
                seen[k] = h.get_tensor(k)
    assert seen.keys() == ts.keys()
    for k, v in ts.items():
        assert seen[k].dtype == v.dtype and torch.equal(seen[k], v)


def test_reader_matches_safetensors(tmp_path):
    ts = _tensors()
    save_file(ts, tmp_path / "model.safetensors")
    ck = Checkpoint(tmp_path)
    assert sorted(ck.names()) == sorted(ts)
    for k, v in ts.items():
        assert torch.equal(ck.read(k), v)


def test_writer_rejects_out_of_order_and_wrong_shape(tmp_path):
    w = ShardedWriter(tmp_path, [("x", torch.float32, (2,)), ("y", torch.float32, (3,))])
    with pytest.raises(RuntimeError, match="expected tensor x"):
        w.write("y", torch.zeros(3))
    with pytest.raises(RuntimeError, match="planned"):
        w.write("x", torch.zeros(4))


def test_missing_shard_is_named(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(MergeInputError, match="missing safetensors shard.*00002"):
        Checkpoint(tmp_path)


def test_folder_without_weights(tmp_path):
    with pytest.raises(MergeInputError, match="neither"):
        Checkpoint(tmp_path)
    with pytest.raises(MergeInputError, match="not found"):
        Checkpoint(tmp_path / "nope")
