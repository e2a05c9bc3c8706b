"""Per-layer merge times on OLMo-3-7B-shaped blocks (`python -m merges bench-layers`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from devtools.olmo3_layout import layout
from merges.io import ShardedWriter


def generate(
    workdir: Path, entries: list[tuple[str, tuple[int, ...]]], delta_std: float = 1e-3
) -> list[Path]:
    """Base (N(0, 0.02)) and 3 experts (base + 10%-dense N(0, delta_std) deltas), tensor by tensor."""
    folders = [workdir / n for n in ("base", "e1", "e2", "e3")]
    hidden = dict(entries)["model.norm.weight"][0]
    cfg = {
        "architectures": ["Olmo3ForCausalLM"],
        "model_type": "olmo3",
        "hidden_size": hidden,
        "num_hidden_layers": sum(1 for n, _ in entries if n.endswith("q_proj.weight")),
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
    }
    if all((f / "config.json").exists() for f in folders):
        return folders
    writers = []
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
        writers.append(ShardedWriter(f, [(n, torch.bfloat16, s) for n, s in entries], 2 * 1024**3))
    g = torch.Generator().manual_seed(0)
    for name in writers[0].order:
        shape = dict(entries)[name]
        w0 = torch.randn(shape, generator=g) * 0.02
        writers[0].write(name, w0.to(torch.bfloat16))
        for w in writers[1:]:
            delta = (
                torch.randn(shape, generator=g) * delta_std * (torch.rand(shape, generator=g) < 0.1)
            )
            w.write(name, (w0 + delta).to(torch.bfloat16))
    for w, f in zip(writers, folders, strict=True):
        w.close()
        (f / "config.json").write_text(json.dumps(cfg, indent=2))
        (f / "tokenizer.json").write_text("{}")
    return folders


def bench_layers(workdir: Path, layers: int, method_specs: list[str], device: str = "auto") -> int:
    """Per-layer merge times on OLMo-3-7B-shaped blocks (hidden 4096, intermediate 11008).

    Each spec is METHOD[:factor_dtype][:key=value,...]; the vocabulary is cut to 1024 rows so that
    the time goes to the blocks. A small SVD/eigh on the device first takes the library warm-up.
    """
    from merges.device import resolve_device
    from merges.engine import MergeSpec, run_merge

    dev = resolve_device(device)
    for dt in (torch.float32, torch.float64):
        x = torch.randn(256, 128, device=dev, dtype=dt)
        torch.linalg.svd(x, full_matrices=False)
        torch.linalg.eigh(x.T @ x)
    entries = layout(layers, vocab=1024)
    t0 = time.perf_counter()
    folders = generate(workdir, entries, delta_std=1e-4)
    print(
        f"generated base + 3 experts with {layers} OLMo-3-7B-shaped layer(s) in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    rows = []
    for spec in method_specs:
        method, *rest = spec.split(":")
        factor = rest[0] if rest and rest[0] else "float64"
        params = dict(kv.split("=", 1) for kv in rest[1].split(",")) if len(rest) > 1 else {}
        record = run_merge(
            MergeSpec(
                method,
                folders[0],
                folders[1:],
                workdir / "out",
                params=params,
                device=str(dev),
                factor_dtype=factor,
                force=True,
            ),
            progress=False,
        )
        per = record["timings"]["per_tensor_s"]
        for i in range(layers):
            p = f"model.layers.{i}."
            by_kind = {
                k.removeprefix(p).removesuffix(".weight"): v
                for k, v in per.items()
                if k.startswith(p) and "proj" in k
            }
            row = {
                "method": spec,
                "layer": i,
                "layer_s": round(sum(by_kind.values()), 3),
                **by_kind,
                "max_bf16_lost_frac": record["summary"]["max_bf16_lost_frac"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"device: {record['device']}")
    (workdir / "layer_times.json").write_text(json.dumps(rows, indent=2))
    return 0
