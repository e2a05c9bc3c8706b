"""The plan's sweep part (pipeline.plan.Plan mixes it in): the points' ids, the validation suite
and its batches (one swept merge's points per batch), where points' validation samples and scores
go, and the record a selection reads."""

from __future__ import annotations

from functools import cached_property

from evals.registry import Suite, get_suite


class SweepPlan:
    """Sweep points of a Plan: needs its `config`, `eval`, `suite`, `run`, `points`, `merge_dir`
    and `fingerprint_raw`."""

    @property
    def point_ids(self) -> list[str]:
        """Every sweep point's merge id, in sweep and grid order."""
        return [p.id for pts in self.points.values() for p in pts]

    @cached_property
    def validation_suite(self) -> Suite | None:
        """The suite sweep points are scored on (eval.validation_suite, else the suite's own)."""
        name = self.validation_suite_arg
        return get_suite(name) if name else None

    @property
    def validation_suite_arg(self) -> str | None:
        """How jobs name the validation suite: a suite name, or a user's suite file path."""
        return self.eval.get("validation_suite") or self.suite.validation

    @cached_property
    def val_batches(self) -> dict[str, list[str]]:
        """{job id: the sweep points it generates and scores on the validation suite}: each swept
        merge's points in batches of their own, so a change to one merge reruns its own
        validation batches and selection only, never another sweep's."""
        per = self.eval["models_per_job"]
        chunks = [
            ids[i : i + per]
            for ids in ([p.id for p in pts] for pts in self.points.values())
            for i in range(0, len(ids), per)
        ]
        return {f"val{i}": c for i, c in enumerate(chunks, start=1)}

    def val_samples_dir(self, point: str) -> str:
        return f"results/{self.run}/validation/samples/{point}"

    def val_score_file(self, point: str, benchmark: str) -> str:
        return f"results/{self.run}/validation/scores/{point}/{benchmark}.json"

    def sweep_file(self, merge_id: str) -> str:
        """What the selection reads: the points, their folders and validation score files."""
        return f"results/{self.run}/sweeps/{merge_id}.points.json"

    def selection_file(self, merge_id: str) -> str:
        return f"results/{self.run}/sweeps/{merge_id}.json"

    def sweep_record(self, merge_id: str) -> dict:
        suite = self.validation_suite
        return {
            "merge": merge_id,
            "suite": self.validation_suite_arg,
            "rule": self.config["sweeps"][merge_id].get("select", "average"),
            "points": [
                {
                    "id": p.id,
                    "values": dict(p.values),
                    "folder": self.merge_dir(p.id),
                    "fingerprint": self.fingerprint_raw(p.id),
                    "scores": {b: self.val_score_file(p.id, b) for b in suite.benchmarks},
                }
                for p in self.points[merge_id]
            ],
        }

    def sweep_plot(self, merge_id: str) -> str:
        """The report's plot of a sweep (validation against each parameter, test marked)."""
        return f"results/{self.run}/sweeps/{merge_id}.png"

    def sweep_batches(self, merge_id: str) -> list[str]:
        """The validation batches holding a swept merge's points."""
        ids = {p.id for p in self.points[merge_id]}
        return [b for b, pts in self.val_batches.items() if ids & set(pts)]

    def points_merge(self, point: str) -> str:
        """The swept merge a point belongs to."""
        return next(mid for mid, pts in self.points.items() if point in {p.id for p in pts})
