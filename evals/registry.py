"""Benchmarks and suites as data: `evals/benchmarks/*.yaml` and `evals/suites/*.yaml`.

A benchmark names its data source, prompt, sampling settings, scorer, headline metric and domain
(the expert whose template the `per_task` policy uses and whose row reports it). A suite lists its
benchmarks in the report's column order, with overrides of their sampling settings and headline,
the data source kind (`hf` or the project's offline `fixture` files, optionally a suite's own
folder of them), the context length, optionally a reference table of published numbers and the
validation suite on which parameter sweeps choose a merge's parameters (items disjoint from the
suite's own).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import pydantic

from evals.errors import EvalInputError
from mergeeval.yamlio import load_yaml

ROOT = Path(__file__).parent
FIXTURES = ROOT / "fixtures"
CODE_FORMATS = ("humaneval", "mbpp")  # scored by running programs (in the sandbox)


class Sampling(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    n: int = pydantic.Field(1, ge=1)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = pydantic.Field(512, ge=1)
    stop: list[str] = []


class Prompt(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    user: str
    assistant_prefix: str = ""


class Source(pydantic.BaseModel):
    """Where a benchmark's items come from: a hub dataset (at a revision, a split, optionally a
    config; rows kept by a `filter` of column values and a seeded `sample`) or an EvalPlus release."""

    model_config = pydantic.ConfigDict(extra="forbid")
    hf_dataset: str | None = None
    revision: str | None = None
    config: str | None = None
    split: str | None = None
    filter: dict[str, str | int | list[str | int]] | None = None
    sample: dict[Literal["n", "seed"], int] | None = None
    evalplus_release: str | None = None
    evalplus_mbpp_release: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("hf_dataset", "evalplus_release", "evalplus_mbpp_release")
                 if getattr(self, k)]  # fmt: skip
        if len(kinds) != 1:
            raise ValueError(f"name exactly one of hf_dataset, evalplus_release, "
                             f"evalplus_mbpp_release (got {kinds or 'none'})")  # fmt: skip
        if self.sample is not None and self.sample.get("n", 0) < 1:
            raise ValueError("sample needs n >= 1 (and optionally a seed)")
        return self


class Benchmark(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    description: str
    format: Literal["aime", "humaneval", "mbpp", "ifeval"]
    domain: str = pydantic.Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: dict
    fixture: str
    prompt: Prompt
    sampling: Sampling
    scorer: Literal["aime", "evalplus_base", "evalplus_plus", "ifeval"]
    samples_from: str | None = None
    headline: str = "pass@1"

    @pydantic.field_validator("source")
    @classmethod
    def _source(cls, v: dict) -> dict:
        Source.model_validate(v)  # checked, kept as the dict the loaders and the plan read
        return v

    @property
    def generation_name(self) -> str:
        """The benchmark whose samples this one scores (HumanEval+ reuses HumanEval's)."""
        return self.samples_from or self.name


class Suite(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    data: Literal["hf", "fixture"]
    fixtures: str = ""  # a subfolder of evals/fixtures holding this suite's fixture files
    max_model_len: int
    benchmarks: dict[str, dict]  # in report-column order, each with optional overrides
    reference: str | None = None  # a CSV in evals/reference: published numbers of the same table
    validation: str | None = None  # the suite whose items (disjoint from these) sweeps select on

    @property
    def columns(self) -> list[str]:
        """The report's columns: every benchmark of the suite, in the suite's order."""
        return list(self.benchmarks)

    def reference_file(self) -> Path | None:
        if self.reference is None:
            return None
        path = ROOT / "reference" / self.reference
        if not path.is_file():
            raise EvalInputError(f"suite {self.name!r}: reference table {path} does not exist")
        return path

    def fixture_file(self, bench: Benchmark) -> Path | None:
        """The suite's own fixture file for a benchmark (None: the shared fixtures or the hub)."""
        if self.data != "fixture" or not self.fixtures:
            return None
        path = FIXTURES / self.fixtures / bench.fixture
        if not path.is_file():
            raise EvalInputError(f"suite {self.name!r}: fixture file {path} does not exist")
        return path

    def benchmark(self, name: str) -> Benchmark:
        """The benchmark with this suite's overrides applied."""
        if name not in self.benchmarks:
            raise EvalInputError(
                f"suite {self.name!r} has no benchmark {name!r}; it has: {', '.join(self.benchmarks)}"
            )
        bench = get_benchmark(name)
        over = self.benchmarks[name] or {}
        unknown = set(over) - {"sampling", "headline"}
        if unknown:
            raise EvalInputError(
                f"suite {self.name!r}, benchmark {name!r}: only 'sampling' and 'headline' can be "
                f"overridden, not {sorted(unknown)}"
            )
        sampling = bench.sampling.model_copy(update=over.get("sampling", {}))
        return bench.model_copy(
            update={
                "sampling": Sampling.model_validate(sampling.model_dump()),
                "headline": over.get("headline", bench.headline),
            }
        )


def _load(folder: Path, kind: str, model):
    out = {}
    for f in sorted(folder.glob("*.yaml")):
        try:
            obj = model.model_validate(load_yaml(f, f"{kind} definition", EvalInputError))
        except pydantic.ValidationError as e:
            raise EvalInputError(f"{f}: invalid {kind} definition: {e}") from None
        out[obj.name] = obj
    return out


@cache
def benchmarks() -> dict[str, Benchmark]:
    return _load(ROOT / "benchmarks", "benchmark", Benchmark)


@cache
def suites() -> dict[str, Suite]:
    return _load(ROOT / "suites", "suite", Suite)


def get_benchmark(name: str) -> Benchmark:
    if name not in benchmarks():
        raise EvalInputError(
            f"unknown benchmark {name!r}; valid benchmarks: {', '.join(benchmarks())}"
        )
    return benchmarks()[name]


def _check_suite(suite: Suite, where: str) -> Suite:
    unknown = [b for b in suite.benchmarks if b not in benchmarks()]
    if unknown:
        raise EvalInputError(
            f"{where}: unknown benchmark {unknown[0]!r}; valid benchmarks: {', '.join(benchmarks())}"
        )
    return suite


def get_suite(name: str) -> Suite:
    """A suite by name, or from a YAML file path (a user's own suite)."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise EvalInputError(f"suite file not found: {path}")
        try:
            suite = Suite.model_validate(load_yaml(path, "suite file", EvalInputError))
        except pydantic.ValidationError as e:
            raise EvalInputError(f"{path}: invalid suite definition: {e}") from None
        return _check_suite(suite, f"suite file {path}")
    if name not in suites():
        raise EvalInputError(
            f"unknown suite {name!r}; valid suites: {', '.join(suites())} (or a suite .yaml file)"
        )
    return _check_suite(suites()[name], f"suite {name!r}")
