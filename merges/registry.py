"""Merge methods by name: each is a pure function over one tensor's stack of task vectors."""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pydantic
import torch

from merges.errors import MergeInputError


class Params(pydantic.BaseModel):
    """Base class of every method's parameters: typed, with defaults, unknown keys rejected."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def PerExpert(**bounds):  # noqa: N802  (a type, used in annotations)
    """The type of a float parameter a merge may give per expert, each value within `bounds`:
    a number (every expert), a list in expert order, or a mapping keyed by expert name, which
    `Method.parse_params(raw, experts)` resolves to one value per expert (what merge.json records)."""
    item = Annotated[float, pydantic.Field(**bounds)]
    return item | list[item]


def per_expert(default: float, description: str):
    """The Field of a `PerExpert` parameter."""
    return pydantic.Field(
        default, description=f"{description} (per expert)", json_schema_extra={"per_expert": True}
    )


def expert_values(value: float | list[float], n: int) -> list[float]:
    """A per-expert parameter as n values (a number applies to every expert)."""
    if isinstance(value, list):
        if len(value) != n:
            raise MergeInputError(f"{len(value)} per-expert values for {n} expert(s)")
        return list(value)
    return [value] * n


@dataclass
class TensorTask:
    """One tensor's merge problem.

    deltas: [T, *shape] fp32 task vectors Δ_t = W_t − W_0 on the compute device (a flat chunk
            [T, k] for `elementwise` methods); the method may overwrite it (the engine is done with it).
    grams:  per expert, the [n, n] input Gram of this Linear (RegMean), else None.
    factor_dtype: dtype for factorisations and solves (float64 unless asked otherwise).
    info:   per-tensor diagnostics the method wants recorded in merge.json.
    base:   W_0 in fp32, the same shape as one delta (methods registered with needs_base only).
    """

    name: str
    deltas: torch.Tensor
    grams: list[torch.Tensor] | None = None
    factor_dtype: torch.dtype = torch.float64
    info: dict = field(default_factory=dict)
    base: torch.Tensor | None = None


MergeFn = Callable[[TensorTask, Params], torch.Tensor]


@dataclass
class FactoredTask:
    """One tensor's merge problem when every expert's task vector is low rank: Δ_t = B_t A_t.

    factors: per expert (B_t [m, r_t], A_t [r_t, n]) in factor_dtype on the compute device, the
             LoRA scale already absorbed into B_t (a PEFT adapter's s·B·A, or any other factoring).
    shape:   (m, n), the tensor's shape.
    factor_dtype, info: as in TensorTask.
    """

    name: str
    factors: list[tuple[torch.Tensor, torch.Tensor]]
    shape: tuple[int, int]
    factor_dtype: torch.dtype = torch.float64
    info: dict = field(default_factory=dict)


# fn(task, params) -> dense merged Δ* [m, n], or None where these parameters have no exact
# factored form (the engine then takes the dense path).
FactoredFn = Callable[[FactoredTask, Params], torch.Tensor | None]


@dataclass(frozen=True)
class Method:
    name: str
    params: type[Params]
    fn: MergeFn
    summary: str
    needs_stats: bool = False
    matrix_only: bool = True  # False: element-wise, valid on tensors of any shape
    elementwise: bool = False  # True: each entry merges alone, so the engine may pass chunks
    needs_base: bool = False  # True: the method reads W_0 itself (TensorTask.base)
    n_experts: tuple[int, int | None] = (1, None)  # how many experts it merges (min, max)

    @property
    def factored(self) -> FactoredFn | None:
        """The method's exact low-rank path (`register_factored`), if it has one."""
        return _FACTORED.get(self.name)

    def per_expert_keys(self) -> list[str]:
        return [
            k
            for k, f in self.params.model_fields.items()
            if (f.json_schema_extra or {}).get("per_expert")
        ]

    def check_expert_count(self, n: int) -> None:
        lo, hi = self.n_experts
        if n < lo or (hi is not None and n > hi):
            want = (
                f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            )
            raise MergeInputError(f"method {self.name!r} merges {want} expert(s); {n} given")

    def source_file(self) -> Path:
        return Path(inspect.getsourcefile(self.fn))

    def source_hash(self) -> str:
        """sha256 of the method's source file: changes whenever its code changes."""
        return hashlib.sha256(self.source_file().read_bytes()).hexdigest()

    def parse_params(self, raw: dict[str, object], experts: list[str] | None = None) -> Params:
        """Validate `{key: value}` (strings allowed) into typed parameters. With the experts' names,
        every per-expert parameter becomes a list of one value per expert, in expert order."""
        fields = self.params.model_fields
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            valid = ", ".join(f"{k} (default {f.default!r})" for k, f in fields.items()) or "none"
            raise MergeInputError(
                f"method {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}"
            )
        raw = dict(raw)
        for key in self.per_expert_keys():
            value = raw.get(key, fields[key].default)
            raw[key] = self._per_expert(key, value, experts)
        for key, value in raw.items():
            if key not in self.per_expert_keys() and isinstance(value, list | dict):
                raise MergeInputError(
                    f"parameter {key!r} of method {self.name!r} is one value for all experts, "
                    f"not {type(value).__name__}; per-expert parameters: "
                    f"{', '.join(self.per_expert_keys()) or 'none'}"
                )
        try:
            return self.params.model_validate(raw)
        except pydantic.ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}" for er in e.errors())
            raise MergeInputError(f"bad parameter for method {self.name!r}: {msgs}") from None

    def _per_expert(self, key: str, value, experts: list[str] | None):
        """A per-expert value as given (names checked when known) or, with experts, as a list."""
        where = f"parameter {key!r} of method {self.name!r}"
        if isinstance(value, dict):
            if experts is None:
                return list(value.values())
            unknown = sorted(set(value) - set(experts))
            missing = [e for e in experts if e not in value]
            if unknown or missing:
                what = (
                    f"names no expert {unknown[0]!r}" if unknown else f"lacks expert {missing[0]!r}"
                )
                raise MergeInputError(
                    f"{where} {what}; give one value per expert ({', '.join(experts)}) "
                    "or one number for all"
                )
            return [value[e] for e in experts]
        if isinstance(value, list):
            if experts is not None and len(value) != len(experts):
                raise MergeInputError(
                    f"{where} has {len(value)} values for {len(experts)} expert(s) "
                    f"({', '.join(experts)}); give one per expert, in order, or one number for all"
                )
            return value
        return [value] * len(experts) if experts is not None else value

    def describe_params(self) -> dict[str, dict]:
        out = {}
        for k, f in self.params.model_fields.items():
            ann = f.annotation
            choices = typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()
            per = (f.json_schema_extra or {}).get("per_expert")
            out[k] = {
                "type": "float, or one per expert"
                if per
                else "|".join(map(str, choices))
                if choices
                else getattr(ann, "__name__", str(ann)),
                "default": f.default,
                "help": f.description or "",
            }
        return out


_REGISTRY: dict[str, Method] = {}
_FACTORED: dict[str, FactoredFn] = {}


def register(
    name: str,
    params: type[Params],
    *,
    needs_stats: bool = False,
    matrix_only: bool = True,
    elementwise: bool = False,
    needs_base: bool = False,
    n_experts: tuple[int, int | None] = (1, None),
):
    """Decorator: register `fn(task, params) -> merged delta` under `name`."""

    def deco(fn: MergeFn) -> MergeFn:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[name] = Method(
            name,
            params,
            fn,
            " ".join(doc.split("\n\n")[0].split()),
            needs_stats,
            matrix_only,
            elementwise,
            needs_base,
            n_experts,
        )
        return fn

    return deco


def register_factored(name: str):
    """Decorator: register `fn(FactoredTask, params) -> merged Δ* | None` as the exact factored
    path of method `name` (same parameters, same result as the dense path up to rounding)."""

    def deco(fn: FactoredFn) -> FactoredFn:
        if name in _FACTORED:
            raise RuntimeError(f"factored path of {name!r} registered twice")
        _FACTORED[name] = fn
        return fn

    return deco


def methods() -> dict[str, Method]:
    import merges.methods  # noqa: F401  (registers every method)

    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    all_methods = methods()
    if name not in all_methods:
        raise MergeInputError(f"unknown method {name!r}; valid methods: {', '.join(all_methods)}")
    return all_methods[name]
