"""The run's revision lock: branches and tags resolved once, read from the lock afterwards, resolved
again only when asked or when the config names another revision; pinned commits checked once, when
they enter the lock; the plan's paths name the commits. (Against a real hub server: tests/test_hub.py.)"""

import pytest

from mergeeval.yamlio import load_yaml
from pipeline.plan import Plan
from pipeline.revisions import HubInput, RevisionError, hub_inputs, lock_revisions

A, B, C = "a" * 40, "b" * 40, "c" * 40


class Hub:
    """A resolver that says what a moving hub would say and counts the questions."""

    def __init__(self, heads: dict[tuple[str, str], str]):
        self.heads, self.asked = heads, []

    def __call__(self, item: HubInput) -> str:
        self.asked.append(item.key)
        if (item.repo, item.revision) not in self.heads:
            raise RevisionError(item.key, f"{item.repo} has no revision {item.revision!r}")
        return self.heads[item.repo, item.revision]


def test_branches_are_locked_and_a_moved_main_changes_nothing_until_updated(tmp_path):
    lock = tmp_path / "revisions.lock.yaml"
    items = [HubInput("models.base", "model", "org/base", C),
             HubInput("models.experts.math", "model", "org/math", "main")]  # fmt: skip
    hub = Hub({("org/math", "main"): A, ("org/base", C): C})
    assert lock_revisions(items, lock, resolve=hub, offline=False) == {
        "models.base": C, "models.experts.math": A}  # fmt: skip
    assert hub.asked == ["models.base", "models.experts.math"]  # a pinned commit is checked once
    recorded = load_yaml(lock, "lock")
    assert recorded["models.experts.math"] == {
        "kind": "model", "repo": "org/math", "revision": "main", "commit": A}  # fmt: skip

    hub.heads["org/math", "main"] = B  # main moved
    assert lock_revisions(items, lock, resolve=hub, offline=False)["models.experts.math"] == A
    assert hub.asked == ["models.base", "models.experts.math"]
    before = lock.read_text()
    assert lock_revisions(items, lock, update=True, resolve=hub, offline=False)[
        "models.experts.math"] == B  # fmt: skip
    assert lock.read_text() != before and B in lock.read_text()

    # another revision in the config is resolved anew, without update
    hub.heads["org/math", "v1"] = C
    items[1] = HubInput("models.experts.math", "model", "org/math", "v1")
    assert lock_revisions(items, lock, resolve=hub, offline=False)["models.experts.math"] == C


def test_offline_keeps_unresolved_inputs_out_and_a_bad_revision_is_one_error(tmp_path, capsys):
    lock = tmp_path / "lock.yaml"
    items = [HubInput("benchmarks.aime24", "dataset", "org/aime", "main")]
    assert lock_revisions(items, lock, resolve=Hub({}), offline=True) == {}
    assert "not resolved to a commit (offline" in capsys.readouterr().err
    assert not lock.exists()
    with pytest.raises(RevisionError, match="benchmarks.aime24: org/aime has no revision 'main'"):
        lock_revisions(items, lock, resolve=Hub({}), offline=False)
    assert not lock.exists()
    # a pinned commit the hub lacks stops the plan; offline it is taken as given
    pinned = [HubInput("stats.prompts.if", "dataset", "org/if", C)]
    with pytest.raises(RevisionError, match=f"stats.prompts.if: org/if has no revision '{C}'"):
        lock_revisions(pinned, lock, resolve=Hub({}), offline=False)
    assert not lock.exists()
    assert lock_revisions(pinned, lock, resolve=Hub({}), offline=True) == {"stats.prompts.if": C}
    lock.unlink()
    lock.write_text("- not a mapping\n")
    with pytest.raises(RevisionError, match="malformed; delete it"):
        lock_revisions(items, lock, resolve=Hub({}), offline=False)


def test_the_table1_plan_names_the_locked_commits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the lock goes to results/table1/ under the working directory
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = load_yaml(root / "config/table1.yaml", "run config")
    plan = Plan(config)
    items = hub_inputs(plan.config, plan.suite)
    keys = [it.key for it in items]
    assert keys[:4] == ["models.base", "models.experts.math", "models.experts.code",
                        "models.experts.if"]  # fmt: skip
    assert {"stats.prompts.math", "benchmarks.aime24", "benchmarks.ifeval"} <= set(keys)
    hub = Hub(
        {(it.repo, it.revision): it.revision if len(it.revision) == 40 else B for it in items}
    )
    plan.lock_revisions(resolve=hub)
    err = capsys.readouterr().err
    unpinned = [it for it in items if it.revision == "main"]
    assert err.count("is not pinned in the config") == len(unpinned) > 0
    assert plan.model_dir("math").endswith(f"/{B}") and plan.model_dir("if").endswith(
        config["models"]["experts"]["if"]["revision"])  # fmt: skip
    assert f"/{B}/" in plan.prompts_file("math", "per_expert")
    assert plan.data_revisions["aime24"] == B
    assert (tmp_path / "results/table1/revisions.lock.yaml").exists()
