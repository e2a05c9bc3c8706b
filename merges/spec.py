"""What one merge is asked to do: the fields `merge.json` records, the valid choices, and the
spec file (`python -m merges run --spec FILE`, YAML or JSON) that holds the same fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import torch

from merges.device import DEVICES
from merges.errors import MergeInputError
from merges.policy import REST_POLICIES

OUTPUT_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FACTOR_DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Where the merged folder's generation_config.json comes from: the base (as the ACTMat authors'
# `save_pretrained` of a model built from the base did), the tokenizer source, or nowhere.
GENERATION_CONFIG_SOURCES = ("base", "tokenizer", "none")
# what a merge writes: a full model folder, or a PEFT LoRA adapter of the base (merges.adapter_out)
OUTPUT_FORMATS = ("model", "adapter")


@dataclass
class MergeSpec:
    """Everything one merge depends on (all of it is recorded in merge.json)."""

    method: str
    base: Path
    experts: list[Path]
    output: Path
    params: dict = field(default_factory=dict)
    stats: list[Path] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "bfloat16"
    tokenizer_from: Path | None = None
    rest_policy: str = "mean_delta"
    factor_dtype: str = "float64"
    generation_config_from: str = "base"
    force: bool = False
    allow_duplicate_experts: bool = False
    max_shard_bytes: int = 5 * 1024**3
    recipe: str | None = None  # how this merge relates to a published recipe (recorded as given)
    expert_names: list[str] | None = None  # names for per-expert parameters (default: folder names)
    spec_file: Path | None = None  # the --spec file this came from (recorded), if any
    output_format: str = "model"
    adapter_rank: int | None = None  # adapter output: the rank kept (default: Σ of the experts')
    adapter_energy: float | None = None  # adapter output: or the share of ‖Δ*‖²_F kept per module


Text = Annotated[str, pydantic.StringConstraints(min_length=1)]
Scalar = pydantic.StrictBool | pydantic.StrictInt | pydantic.StrictFloat | pydantic.StrictStr


def _literal(values):
    return Literal[tuple(values)]  # type: ignore[valid-type]


class SpecFile(pydantic.BaseModel):
    """The fields a spec file may hold: MergeSpec's, with the CLI's choices and defaults."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    method: Text
    base: Text
    experts: list[Text] = pydantic.Field(min_length=1)
    output: Text
    params: dict[str, Scalar | list[Scalar] | dict[Text, Scalar]] = {}
    stats: list[Text] = []
    device: _literal(DEVICES) = "auto"
    dtype: _literal(OUTPUT_DTYPES) = "bfloat16"
    tokenizer_from: Text | None = None
    rest_policy: _literal(REST_POLICIES) = "mean_delta"
    factor_dtype: _literal(FACTOR_DTYPES) = "float64"
    generation_config_from: _literal(GENERATION_CONFIG_SOURCES) = "base"
    force: bool = False
    allow_duplicate_experts: bool = False
    recipe: Text | None = None
    expert_names: list[Text] | None = None
    output_format: _literal(OUTPUT_FORMATS) = "model"
    adapter_rank: Annotated[int, pydantic.Field(ge=1)] | None = None
    adapter_energy: Annotated[float, pydantic.Field(gt=0, le=1)] | None = None


SPEC_FIELDS = tuple(SpecFile.model_fields)


def _field_path(raw: dict, er: dict) -> tuple[str, ...]:
    """The error's location as far as it names keys of the file (pydantic appends the union
    member, e.g. `params.density.bool`)."""
    if er["type"] == "missing":
        return tuple(str(x) for x in er["loc"])
    out, node = [], raw
    for part in er["loc"]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
        out.append(str(part))
    return tuple(out) or tuple(str(x) for x in er["loc"][:1])


def _problem(er: dict, scalar_union: bool) -> str:
    if er["type"] == "extra_forbidden":
        return f" is not a merge field; valid fields: {', '.join(SPEC_FIELDS)}"
    if er["type"] == "missing":
        return " is required"
    got = repr(er.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    msg = (
        "expected a number, a string or a boolean (per expert: a list, or a mapping by expert name)"
        if scalar_union
        else er["msg"]
    )
    return f": {msg} (got {got})"


def load_spec_file(path: Path) -> MergeSpec:
    """A MergeSpec from a YAML or JSON file; relative paths stay relative to the current directory.

    Any problem is one MergeInputError naming the file and the field.
    """
    from mergeeval.yamlio import load_yaml

    path = Path(path)
    if not path.is_file():
        raise MergeInputError(f"spec file {path} not found")
    if path.suffix != ".json":
        raw = load_yaml(path, "spec file", MergeInputError, syntax="YAML/JSON")
    else:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise MergeInputError(f"spec file {path} is not UTF-8 text ({e})") from None
        except json.JSONDecodeError as e:
            what = " ".join(str(e).split())
            raise MergeInputError(f"spec file {path} is not valid YAML/JSON: {what}") from None
    if not isinstance(raw, dict):
        raise MergeInputError(
            f"spec file {path} must hold one mapping of fields ({', '.join(SPEC_FIELDS)})"
        )
    try:
        s = SpecFile.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = {}  # one per field: a union's member errors (str, int, ...) count once
        for er in e.errors():
            loc = _field_path(raw, er)
            truncated = loc[:1] == ("params",) and len(loc) < len(er["loc"])
            problems.setdefault(loc, _problem(er, scalar_union=truncated))
        loc, msg = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise MergeInputError(f"spec file {path}: field {'.'.join(loc)!r}{msg}{more}") from None
    return spec_from_fields(s.model_dump(), spec_file=path)


def spec_from_fields(f: dict, spec_file: Path | None = None) -> MergeSpec:
    """A MergeSpec from the spec file's fields (paths given as strings)."""
    f = dict(f)
    for key in ("base", "output", "tokenizer_from"):
        if f.get(key):
            f[key] = Path(f[key])
    f["experts"] = [Path(e) for e in f["experts"]]
    f["stats"] = [Path(x) for x in f.get("stats", [])]
    return MergeSpec(**f, spec_file=spec_file)


def expert_names(spec: MergeSpec) -> list[str]:
    """The experts' names for per-expert parameters: `spec.expert_names`, else the folder names."""
    names = spec.expert_names or [Path(e).name for e in spec.experts]
    if len(names) != len(spec.experts):
        raise MergeInputError(
            f"{len(names)} expert names for {len(spec.experts)} experts; give one name per expert"
        )
    if len(set(names)) != len(names) and any(isinstance(v, dict) for v in spec.params.values()):
        raise MergeInputError(
            f"expert names {names} repeat; name the experts (expert_names in a spec file, "
            "--expert-name on the command line) to give per-expert parameters"
        )
    return list(names)
