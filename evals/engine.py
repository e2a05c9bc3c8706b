"""One vLLM engine serving several model folders in turn.

Starting an engine (importing vLLM, building the model, the KV cache) costs seconds to minutes;
generating the demo's benchmarks costs a fraction of a second. A job that generates for several
folders therefore keeps its engine and reloads the next folder's weights in place (vLLM's
`reload_weights`) when nothing else vLLM reads differs: the same engine arguments and byte-identical
config, generation config and tokenizer files (`engine_identity`). Otherwise the engine is replaced.
The prefix cache is emptied after every reload, and every request carries its own seed, so a
folder's samples are the same whichever folder the engine served before (tests/test_generate.py).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path

from mergeeval.records import MERGE_JSON, SOURCE_JSON, files_digest

# files of a model folder that vLLM does not read, or that do not change what it computes:
# the weights (reloaded), this project's records, and the chat template (prompts arrive rendered)
NOT_ENGINE_FILES = (MERGE_JSON, SOURCE_JSON, "chat_template.jinja", "README.md")


def engine_identity(model: Path, engine_args: dict) -> str:
    """Hash of what an engine depends on besides the weights: its arguments and every other file."""
    args = json.dumps(engine_args, sort_keys=True)
    return hashlib.sha256(f"{args}\n{files_digest(model, NOT_ENGINE_FILES)}".encode()).hexdigest()


class EngineSession:
    """`llm_for(model)`: an engine holding `model`'s weights, started or reloaded as needed."""

    def __init__(self, engine_args: dict):
        self.args = dict(engine_args)
        self.llm = None
        self.identity: str | None = None
        self.model: Path | None = None

    def llm_for(self, model: Path):
        """(engine, how: {"weights": "started" | "reloaded" | "loaded", "seconds": ...})."""
        model = Path(model)
        if self.model is not None and model.resolve() == self.model.resolve():
            return self.llm, {"weights": "loaded", "seconds": 0.0}
        identity = engine_identity(model, self.args)
        t0 = time.perf_counter()
        if self.llm is not None and identity == self.identity:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model)})
            self.llm.reset_prefix_cache()
            how = "reloaded"
        else:
            self.close()
            self.llm = _start(model, self.args)
            how = "started"
        self.identity, self.model = identity, model
        return self.llm, {"weights": how, "seconds": round(time.perf_counter() - t0, 2)}

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
