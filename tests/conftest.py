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


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """olah serving the offline mirror of the Table 1 repos (tests/hubmirror.py), for the session.

    Skipped when olah is missing (scripts/test.sh installs it into .venv-hub), unless
    MERGEEVAL_REQUIRE_HUB=1 (set by CI), where that fails."""
    from tests.hubmirror import HubServer, build_mirror, olah_cli

    cli = olah_cli()
    if not os.access(cli, os.X_OK):
        why = (
            f"no olah at {cli}: scripts/test.sh installs it into .venv-hub (or set MERGEEVAL_OLAH)"
        )
        if os.environ.get("MERGEEVAL_REQUIRE_HUB") == "1":
            pytest.fail(f"MERGEEVAL_REQUIRE_HUB=1 but {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("hub")
    with HubServer(cli, build_mirror(root / "mirror"), root / "olah") as server:
        yield server
