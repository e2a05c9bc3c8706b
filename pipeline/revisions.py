"""Hub revisions resolved to commits before any job runs, and locked next to the run's outputs.

Every hub input of a run (the base and expert models, the calibration prompt datasets, the
benchmark datasets of an `hf` suite) whose revision is a branch or a tag is resolved to the commit
it names and written to `results/RUN/revisions.lock.yaml`. Later plans read the commit from the
lock, so a moved `main` changes nothing until the user asks (`snakemake --config update_lock=true`),
and every path and record downstream names the commit. A revision given as a full commit is
asked about once too, when it enters the lock, so a commit the hub lacks stops the plan before any
job (offline it is taken as given).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mergeeval.errors import InputError
from mergeeval.hub import COMMIT, endpoint, resolve_commit
from mergeeval.hub import offline as hub_offline
from mergeeval.outputs import write_text_atomic
from mergeeval.yamlio import load_yaml

HEADER = (
    "# The commits this run's hub inputs resolved to (pipeline.revisions). Plans read them from\n"
    "# here; `snakemake --config update_lock=true` resolves the branches and tags again.\n"
)


class RevisionError(InputError):
    """A hub input whose revision cannot be resolved: names the config key and the fix."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class HubInput:
    key: str  # where the config names it, e.g. models.experts.math or benchmarks.aime24
    kind: str  # model | dataset
    repo: str
    revision: str


def hub_inputs(config: dict, suite, validation=None) -> list[HubInput]:
    """Every hub input of a validated run config, its suite and (when it sweeps) its validation
    suite, in a stable order."""
    out = []
    if config["models"]["source"] == "hub":
        m = config["models"]
        for key, e in [("models.base", m["base"])] + [
            (f"models.experts.{name}", e) for name, e in m["experts"].items()
        ]:
            if not e.get("path"):  # a local folder is not downloaded
                out.append(HubInput(key, "model", e["repo_id"], e["revision"]))
    for name, p in sorted(config["stats"].get("prompts", {}).items()):
        if "hf_dataset" in p:
            out.append(HubInput(f"stats.prompts.{name}", "dataset", p["hf_dataset"], p["revision"]))
    chosen = config["eval"].get("revisions", {})
    seen = set()
    for s in (suite, validation):
        if s is None or s.data != "hf":
            continue
        for b in s.benchmarks:
            src = s.benchmark(b).source
            if "hf_dataset" in src and b not in seen:
                seen.add(b)
                rev = chosen.get(b) or src.get("revision") or "main"
                out.append(HubInput(f"benchmarks.{b}", "dataset", src["hf_dataset"], rev))
    return out


def resolve_on_hub(item: HubInput) -> str:
    """The commit `item.revision` names on the hub (HF_ENDPOINT, HF_TOKEN); one clear error that
    names the config key (mergeeval.hub's messages for a missing or gated repo or revision)."""
    try:
        return resolve_commit(item.repo, item.revision, item.kind)
    except InputError as e:
        raise RevisionError(item.key, str(e)) from None
    except Exception as e:  # the network, the server: said once, with the input it was for
        raise RevisionError(item.key, f"could not ask {endpoint()} for {item.repo}@{item.revision} "
                            f"({type(e).__name__}: {e}); retry, or pin a commit") from None  # fmt: skip


def read_lock(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    data = load_yaml(path, "revision lock")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RevisionError(str(path), "malformed; delete it and plan again to resolve anew")
    return data


def lock_revisions(
    items: list[HubInput],
    lock_path: Path,
    update: bool = False,
    resolve: Callable[[HubInput], str] = resolve_on_hub,
    offline: bool | None = None,
) -> dict[str, str]:
    """{config key: commit} for every input; writes the lock when it changes. A branch or tag is
    read from the lock unless `update` or the lock lacks it (or names another repo or revision).
    Offline (HF_HUB_OFFLINE), an input that would need the hub keeps its revision, with a warning."""
    if offline is None:
        offline = hub_offline()
    lock = read_lock(lock_path)
    new, commits = {}, {}
    for it in items:
        entry = lock.get(it.key, {})
        same = entry.get("repo") == it.repo and entry.get("revision") == it.revision
        if same and not update and COMMIT.fullmatch(str(entry.get("commit", ""))):
            commit = entry["commit"]
        elif offline and COMMIT.fullmatch(it.revision):
            commit = it.revision
        elif offline:
            print(f"warning: {it.key}: {it.repo}@{it.revision} is not resolved to a commit (offline: "
                  "HF_HUB_OFFLINE); plan online once to lock it", file=sys.stderr)  # fmt: skip
            continue
        else:
            commit = resolve(it)
        commits[it.key] = commit
        new[it.key] = {"kind": it.kind, "repo": it.repo, "revision": it.revision, "commit": commit}
    if new and new != lock:
        text = HEADER + yaml.safe_dump(new, sort_keys=False, width=120)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(lock_path, text)
    return commits


def unpinned(items: list[HubInput]) -> list[HubInput]:
    """The inputs the config itself does not pin to a commit."""
    return [it for it in items if not COMMIT.fullmatch(it.revision)]
