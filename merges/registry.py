"""Merge methods by name: each is a pure function over one tensor's stack of task vectors."""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
import torch

from merges.errors import MergeInputError


class Params(pydantic.BaseModel):
    """Base class of every method's parameters: typed, with defaults, unknown keys rejected."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass
class TensorTask:
    """One tensor's merge problem.

    deltas: [T, *shape] fp32 task vectors Δ_t = W_t − W_0 on the compute device (a flat chunk
            [T, k] for `elementwise` methods); the method may overwrite it (the engine is done with it).
    grams:  per expert, the [n, n] input Gram of this Linear (RegMean), else None.
    factor_dtype: dtype for factorisations and solves (float64 unless asked otherwise).
    info:   per-tensor diagnostics the method wants recorded in merge.json.
    """

    name: str
    deltas: torch.Tensor
    grams: list[torch.Tensor] | None = None
    factor_dtype: torch.dtype = torch.float64
    info: dict = field(default_factory=dict)


MergeFn = Callable[[TensorTask, Params], torch.Tensor]


@dataclass(frozen=True)
class Method:
    name: str
    params: type[Params]
    fn: MergeFn
    summary: str
    needs_stats: bool = False
    matrix_only: bool = True  # False: element-wise, valid on tensors of any shape
    elementwise: bool = False  # True: each entry merges alone, so the engine may pass chunks

    def source_file(self) -> Path:
        return Path(inspect.getsourcefile(self.fn))

    def source_hash(self) -> str:
        """sha256 of the method's source file: changes whenever its code changes."""
        return hashlib.sha256(self.source_file().read_bytes()).hexdigest()

    def parse_params(self, raw: dict[str, object]) -> Params:
        """Validate `{key: value}` (strings allowed) into typed parameters."""
        fields = self.params.model_fields
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            valid = ", ".join(f"{k} (default {f.default!r})" for k, f in fields.items()) or "none"
            raise MergeInputError(
                f"method {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}"
            )
        try:
            return self.params.model_validate(raw)
        except pydantic.ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}" for er in e.errors())
            raise MergeInputError(f"bad parameter for method {self.name!r}: {msgs}") from None

    def describe_params(self) -> dict[str, dict]:
        out = {}
        for k, f in self.params.model_fields.items():
            ann = f.annotation
            choices = typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()
            out[k] = {
                "type": "|".join(map(str, choices))
                if choices
                else getattr(ann, "__name__", str(ann)),
                "default": f.default,
                "help": f.description or "",
            }
        return out


_REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    params: type[Params],
    *,
    needs_stats: bool = False,
    matrix_only: bool = True,
    elementwise: bool = False,
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
            doc.splitlines()[0] if doc else "",
            needs_stats,
            matrix_only,
            elementwise,
        )
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
