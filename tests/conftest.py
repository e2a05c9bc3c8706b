import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """Tiny OLMo-3 base + math/code/if experts, built once per test session."""
    from devtools.tiny_family import make_tiny_family

    root = tmp_path_factory.mktemp("tiny") / "models"
    base, *experts = make_tiny_family(root, seed=0)
    return base, experts
