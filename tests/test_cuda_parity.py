"""On a CUDA machine: every method's merge on the GPU agrees with the CPU merge (fp32 output)."""

import pytest
import torch
from safetensors.torch import load_file

from merges.engine import MergeSpec, run_merge
from merges.registry import methods

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (checked on the device machine)"
)


@pytest.mark.parametrize("name", [m for m, x in methods().items() if not x.needs_stats])
def test_cuda_matches_cpu(name, tiny_family, tmp_path):
    base, experts = tiny_family
    out = {}
    for dev in ("cpu", "cuda"):
        run_merge(
            MergeSpec(name, base, list(experts), tmp_path / dev, device=dev, dtype="float32"),
            progress=False,
        )
        out[dev] = load_file(tmp_path / dev / "model.safetensors")
    w0 = load_file(base / "model.safetensors")
    for k, a in out["cpu"].items():
        da, db = a - w0[k].float(), out["cuda"][k] - w0[k].float()
        assert (da - db).norm() <= 1e-5 * max(float(da.norm()), 1e-12), k
