"""One vLLM engine serving several model folders and LoRA adapters in turn.

Starting an engine (importing vLLM, building the model, the KV cache) costs seconds to minutes;
generating the demo's benchmarks costs a fraction of a second. A job that generates for several
folders therefore keeps its engine and reloads the next folder's weights in place (vLLM's
`reload_weights`) when nothing else vLLM reads differs: the same engine arguments and byte-identical
config, generation config and tokenizer files (`engine_identity`). Otherwise the engine is replaced.

A LoRA adapter (evals.lora) is never reloaded into weights: its base is started once with LoRA
enabled (`max_lora_rank` the smallest vLLM value holding every adapter of the batch on that base)
and each adapter is a `LoRARequest` on it; the base itself is served by the same engine. Such an
engine's weights are never reloaded, so a folder that is not its base starts another engine.

The prefix cache is emptied after every reload and before every adapter, and every request
carries its own seed, so a folder's or adapter's samples are the same whichever target the engine
served before (tests/test_generate.py, tests/test_lora_serving.py).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path

from evals.lora import Adapter, lora_rank_limit
from mergeeval.records import MERGE_JSON, SOURCE_JSON, files_digest

# files of a model folder that vLLM does not read, or that do not change what it computes:
# the weights (reloaded), this project's records, and the chat template (prompts arrive rendered)
NOT_ENGINE_FILES = (MERGE_JSON, SOURCE_JSON, "chat_template.jinja", "README.md")


def engine_identity(model: Path, engine_args: dict) -> str:
    """Hash of what an engine depends on besides the weights: its arguments and every other file."""
    args = json.dumps(engine_args, sort_keys=True)
    return hashlib.sha256(f"{args}\n{files_digest(model, NOT_ENGINE_FILES)}".encode()).hexdigest()


def adapter_identity(adapter: Adapter, engine_args: dict) -> str:
    """Hash of what an adapter's samples depend on besides the prompts: its config and weights
    (`Adapter.sha256`) and its base's engine identity."""
    base = engine_identity(adapter.base, engine_args)
    return hashlib.sha256(f"{adapter.sha256}\n{base}".encode()).hexdigest()


class EngineSession:
    """`llm_for(model, adapter)`: an engine serving `model` (a full model folder) or `adapter`
    (on its base), started, reloaded or kept as needed. `adapters`: every adapter of the batch,
    so that each base is started once, with LoRA enabled and a rank that holds them all."""

    def __init__(self, engine_args: dict, adapters: list[Adapter] = ()):
        self.args = dict(engine_args)
        self.lora_ranks: dict[Path, int] = {}
        for a in adapters:
            key = a.base.resolve()
            self.lora_ranks[key] = max(self.lora_ranks.get(key, 1), lora_rank_limit(a.rank))
        self.lora_ids: dict[str, int] = {}  # adapter_identity -> LoRARequest id
        self.llm = None
        self.identity: str | None = None
        self.model: Path | None = None

    def args_for(self, model: Path, adapter: Adapter | None = None) -> dict:
        """The engine arguments `model` (or `adapter`'s base) is served with: LoRA enabled on a
        base of this batch's adapters."""
        rank = self.lora_ranks.get(Path(adapter.base if adapter else model).resolve())
        if rank is None:
            return dict(self.args)
        return self.args | {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}

    def order(self, models: list, adapters: list) -> list[int]:
        """Indices of the targets (`models[i]`: an object with a `model` folder; `adapters[i]`:
        its Adapter or None) in serving order: as given, except that every target of one LoRA
        engine (a base and its adapters) runs at the place of the first of them, so that engine
        starts once. Samples do not depend on the order."""
        first: dict[Path, int] = {}
        keys = []
        for i, (t, a) in enumerate(zip(models, adapters, strict=True)):
            base = Path(a.base if a else t.model).resolve()
            keys.append(first.setdefault(base, i) if base in self.lora_ranks else i)
        return sorted(range(len(keys)), key=lambda i: keys[i])

    def llm_for(self, model: Path, adapter: Adapter | None = None):
        """(engine, how, LoRA request or None). how: {"weights": "started" | "reloaded" |
        "loaded", "seconds": ...} for a full model; for an adapter {"weights": "lora", "base":
        "started" | "loaded", "seconds": ..., "lora": the adapter's record}."""
        model = Path(adapter.base if adapter else model)
        args = self.args_for(model)
        identity = engine_identity(model, args)
        t0 = time.perf_counter()
        same = self.model is not None and model.resolve() == self.model.resolve()
        if same and identity == self.identity:
            if adapter is not None:  # no cached prompt of an earlier target serves this one
                self.llm.reset_prefix_cache()
            how = "loaded"
        elif self.llm is not None and identity == self.identity and "enable_lora" not in args:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model)})
            self.llm.reset_prefix_cache()
            how = "reloaded"
        else:
            self.close()
            self.llm = _start(model, args)
            how = "started"
        self.identity, self.model = identity, model
        seconds = round(time.perf_counter() - t0, 2)
        if adapter is None:
            return self.llm, {"weights": how, "seconds": seconds}, None
        from vllm.lora.request import LoRARequest

        # one id (vLLM caches adapters by id) and name (prefix-cache key) per adapter identity
        key = adapter_identity(adapter, args)
        lora_id = self.lora_ids.setdefault(key, len(self.lora_ids) + 1)
        record = adapter.record() | {"max_lora_rank": args["max_lora_rank"]}
        request = LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter.path.resolve()))
        return (
            self.llm,
            {"weights": "lora", "base": how, "seconds": seconds, "lora": record},
            request,
        )

    def close(self) -> None:
        """Shut the engine down (its worker processes and device memory) before another starts."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            self.identity = self.model = None
            gc.collect()


def _start(model: Path, args: dict):
    """A vLLM engine for `model`. Without CUDA (vLLM's CPU build) its core runs in this process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless set), which saves about 30 s per start."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    return LLM(model=str(model), **args)
