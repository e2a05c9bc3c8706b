"""A merged folder is served, unedited, by vLLM (the CPU build here) and generates."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from merges.engine import MergeSpec, run_merge

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], dtype="bfloat16", max_model_len=256, enforce_eager=True, seed=0)
        out = llm.chat([{"role": "user", "content": "What is 2 + 3?"}], SamplingParams(max_tokens=12, temperature=0))
        print("RESULT " + json.dumps({"ids": list(out[0].outputs[0].token_ids), "prompt": out[0].prompt}))
    """
)


@pytest.mark.slow
def test_vllm_generates_from_merged_folder(tiny_family, tmp_path):
    pytest.importorskip("vllm")
    base, experts = tiny_family
    out = tmp_path / "actmat"
    run_merge(MergeSpec("actmat", base, list(experts), out, device="cpu"), progress=False)
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="WARNING"
    )
    r = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert len(result["ids"]) > 0
    assert result["prompt"].startswith(
        "Solve the following math problem"
    )  # the Math expert's template
