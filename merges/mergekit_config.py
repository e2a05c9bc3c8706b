"""A mergekit YAML config (`mergekit-yaml CONFIG.yml`) as a MergeSpec: `merges run --mergekit-config`.

What it reads: `merge_method`, `base_model`, `models` (each `model` with optional `parameters`), the
global `parameters`, `dtype` / `out_dtype`, `tokenizer_source` (`base` or a model) and, for the
family of task-vector methods, mergekit's defaults where the config is silent (`lambda` 1,
`density` 1, `normalize` / `rescale` per method). Every tensor gets the method, as in mergekit
(rest policy `method`); the arithmetic is fp32 whatever `dtype` says (mergekit computes in `dtype`).
The choices mergekit makes differently from the authors' code are selected (`variant: mergekit`,
`rescale: l1`), so a config gives mergekit's tensors. Anything else (slices, modules, per-layer
gradients or filters, `union` tokenizers, chat templates, other keys) is one error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merges.errors import MergeInputError
from merges.registry import get_method
from merges.spec import MergeSpec

TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
            "tokenizer_source"}  # fmt: skip
UNSUPPORTED = {
    "slices": "per-layer slices (passthrough stacking, layer ranges)",
    "modules": "per-module configs",
    "tokenizer": "tokenizer merging",
    "chat_template": "chat template selection (the tokenizer source's template is kept)",
}
# mergekit's task-vector family: (consensus, normalize default, rescale default)
GTA = {
    "task_arithmetic": (False, False, False),
    "ties": (True, True, False),
    "dare_ties": (True, False, True),
    "dare_linear": (False, False, True),
    "breadcrumbs": (False, False, False),
    "breadcrumbs_ties": (True, False, False),
    "della": (True, True, True),
    "della_linear": (False, False, True),
}
RENAMED = {"lambda": "scale", "nuslerp_flatten": "flatten", "nuslerp_row_wise": "row_wise"}
# parameters that change only mergekit's memory use, not a value
INERT = {"int8_mask"}
PER_MODEL = {"weight", "density", "gamma", "epsilon"}
# methods over the listed models only: mergekit ignores base_model for them
NO_BASE = {"linear", "karcher"}
OUT_DTYPES = {"bfloat16": "bfloat16", "float32": "float32", "bf16": "bfloat16", "fp32": "float32"}


def _scalar(value, where: str):
    if isinstance(value, bool | int | float | str):
        return value
    raise MergeInputError(
        f"{where} is {type(value).__name__} ({value!r}); per-layer gradients and filters are not "
        "supported, give one number"
    )


def _folder(ref, where: str, root: Path) -> Path:
    if not isinstance(ref, str):
        raise MergeInputError(f"mergekit config: {where} must be a model folder, got {ref!r}")
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    if not (path / "config.json").is_file():
        path = Path(ref)
    if not (path / "config.json").is_file():
        raise MergeInputError(
            f"mergekit config: {where} {ref!r} is not a local model folder (no config.json); "
            "download it first (python -m merges download) and give its folder"
        )
    return path


def _defaults(method: str) -> dict:
    """mergekit's defaults where they differ from this project's, and the mergekit variants."""
    if method in GTA:
        _, normalize, rescale = GTA[method]
        out = {"scale": 1.0, "normalize": normalize}
        if method != "task_arithmetic":
            out["density"] = 1.0
        if method in ("dare_ties", "dare_linear", "della", "della_linear"):
            out["rescale"] = "l1" if rescale else "none"
        if method in ("ties", "breadcrumbs", "breadcrumbs_ties"):
            out["variant"] = "mergekit"
        if method.startswith("della"):
            out["epsilon"] = 0.15
        return out
    return {"sce": {"variant": "mergekit"}}.get(method, {})


def read_yaml(path: Path) -> dict:
    """The config file as a mapping of supported keys, or one MergeInputError naming the key."""
    from mergeeval.yamlio import load_yaml

    path = Path(path)
    if not path.is_file():
        raise MergeInputError(f"mergekit config {path} not found")
    raw = load_yaml(path, "mergekit config", MergeInputError)
    if not isinstance(raw, dict):
        raise MergeInputError(
            f"mergekit config {path} must be a mapping (merge_method, models, ...)"
        )
    for key in raw:
        if key in UNSUPPORTED:
            raise MergeInputError(
                f"mergekit config {path}: {key!r} ({UNSUPPORTED[key]}) is not supported"
            )
        if key not in TOP_KEYS:
            raise MergeInputError(
                f"mergekit config {path}: unknown key {key!r}; supported: {', '.join(sorted(TOP_KEYS))}"
            )
    return raw


@dataclass
class Translated:
    """A mergekit config in this project's terms; models as `resolve` returned them."""

    method: str
    base: object | None  # None: the config has no base_model (linear, karcher)
    experts: list
    params: dict
    dtype: str
    tokenizer: object | None  # None: the base's


def translate(raw: dict, where: str, resolve) -> Translated:
    """`raw` (from read_yaml) with every model reference passed through `resolve(ref, key)`,
    which returns a comparable identity (a folder, a run's model name) or raises."""
    name = raw.get("merge_method")
    if name in ("passthrough", "arcee_fusion"):
        raise MergeInputError(f"{where}: merge_method {name!r} is not supported (docs/merging.md)")
    method = get_method(str(name))
    models = raw.get("models") or []
    if not isinstance(models, list) or not models:
        raise MergeInputError(f"{where}: 'models' must list the models to merge")
    base = resolve(raw["base_model"], "base_model") if raw.get("base_model") is not None else None
    experts, per_model = [], {}
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or "model" not in entry:
            raise MergeInputError(f"{where}: models[{i}] needs a 'model' key")
        extra = sorted(set(entry) - {"model", "parameters"})
        if extra:
            raise MergeInputError(f"{where}: models[{i}].{extra[0]} is not supported")
        model = resolve(entry["model"], f"models[{i}].model")
        if base is not None and model == base and name not in NO_BASE:
            continue  # the base listed among the models (slerp, nearswap, model_stock configs)
        for key, value in (entry.get("parameters") or {}).items():
            key_where = f"models[{i}].parameters.{key}"
            if key not in PER_MODEL:
                raise MergeInputError(f"{where}: {key_where} is not a per-model parameter here")
            per_model.setdefault(key, {})[len(experts)] = _scalar(value, f"{where}: {key_where}")
        experts.append(model)
    if base is None and name not in NO_BASE:
        raise MergeInputError(f"{where}: merge_method {name!r} needs base_model")
    params = _defaults(method.name)
    for key, value in (raw.get("parameters") or {}).items():
        if key not in INERT:
            params[RENAMED.get(key, key)] = _scalar(value, f"{where}: parameters.{key}")
    for key, values in per_model.items():
        missing = [i for i in range(len(experts)) if i not in values]
        if missing and key not in params:
            raise MergeInputError(
                f"{where}: parameter {key!r} is given for some models but not for "
                f"models[{missing[0]}] and has no global value"
            )
        params[RENAMED.get(key, key)] = [
            values.get(i, params.get(key)) for i in range(len(experts))
        ]
    if method.name in GTA and "weight" not in per_model and "weight" not in params:
        raise MergeInputError(f"{where}: {name} needs a weight for every model")
    method.parse_params(params, [str(i) for i in range(len(experts))])
    out_dtype = raw.get("out_dtype") or raw.get("dtype") or "bfloat16"
    if out_dtype not in OUT_DTYPES:
        raise MergeInputError(
            f"{where}: out_dtype {out_dtype!r} is not supported; use bfloat16 or float32"
        )
    tok = raw.get("tokenizer_source")
    if tok == "union":
        raise MergeInputError(f"{where}: tokenizer_source 'union' is not supported")
    tokenizer = None if tok in (None, "base") else resolve(tok, "tokenizer_source")
    return Translated(method.name, base, experts, params, OUT_DTYPES[out_dtype], tokenizer)


def read_mergekit_config(path: Path, output: Path, device: str = "auto") -> MergeSpec:
    """The MergeSpec that gives mergekit's result for the config at `path` (models: folders)."""
    path = Path(path)
    raw = read_yaml(path)
    t = translate(
        raw, f"mergekit config {path}", lambda ref, key: _folder(ref, key, path.parent).resolve()
    )
    base = t.base if t.base is not None else t.experts[0]  # W_0 only reconstructs W_t there
    return MergeSpec(
        method=t.method,
        base=base,
        experts=t.experts,
        output=Path(output),
        params=t.params,
        device=device,
        dtype=t.dtype,
        tokenizer_from=t.tokenizer if t.tokenizer is not None else base,
        rest_policy="method",
        allow_duplicate_experts=t.base is None,
        expert_names=[f"{i}:{Path(e).name}" for i, e in enumerate(t.experts)],
        recipe=f"mergekit config {path.name}",
    )
