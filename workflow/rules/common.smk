"""The run's plan (pipeline.plan: config validation and every job's inputs and options, testable
without Snakemake) and the small mapping from it to wildcards and input functions."""

import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(workflow.basedir))
)  # the project's packages, also without an install

from merges.deps import code_files, code_record  # noqa: E402
from mergeeval.errors import InputError  # noqa: E402
from pipeline.plan import Plan, argv  # noqa: E402

# `--config update_lock=true`: resolve the hub inputs' branches and tags again (pipeline.revisions)
UPDATE_LOCK = bool(config.pop("update_lock", False))
try:
    PLAN = Plan(config)
    PLAN.check_outputs()  # results/RUN and logs/RUN writable, before the lock is written there
    PLAN.lock_revisions(update=UPDATE_LOCK)
    PLAN.preflight()
except InputError as e:  # a bad config or hub input: one line, before any job runs
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)
RUN = PLAN.run
EXPERTS = PLAN.experts
MERGES = PLAN.merges

if (
    shutil.which("python")
    and Path(shutil.which("python")).resolve() != Path(sys.executable).resolve()
):
    print(
        f"warning: jobs run `python` = {shutil.which('python')}, not this Snakemake's {sys.executable}; "
        "activate the project's environment (source .venv/bin/activate)",
        file=sys.stderr,
    )


wildcard_constraints:
    run=re.escape(RUN),
    batch="|".join(map(re.escape, PLAN.all_batches)),
    merge_id="|".join(map(re.escape, [*MERGES, *PLAN.merge_jobs])),
    swept="|".join(map(re.escape, PLAN.points or ["-"])),
    expert="|".join(map(re.escape, EXPERTS)),
    recipe="|".join(map(re.escape, PLAN.stats_recipes_used or ["per_expert"])),
    benchmark="|".join(map(re.escape, PLAN.benchmarks)),


def merge_code(w):
    """Every project file the merge's result depends on (merges.deps): inputs, so editing or
    touching one reruns exactly the merges that use it."""
    base = Path(workflow.basedir).resolve()
    return [
        str(p.relative_to(base))
        for p in code_files(PLAN.method(w.merge_id).fn.__module__)
    ]


def merge_code_sha256(w):
    return code_record(PLAN.method(w.merge_id).fn.__module__)["sha256"]
