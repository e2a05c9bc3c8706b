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
        f"mergekit config: {where} is {type(value).__name__} ({value!r}); per-layer gradients and "
        "filters are not supported, give one number"
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


def read_mergekit_config(path: Path, output: Path, device: str = "auto") -> MergeSpec:
    """The MergeSpec that gives mergekit's result for the config at `path`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MergeInputError(f"mergekit config {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MergeInputError(
            f"mergekit config {path} is not valid YAML: {' '.join(str(e).split())}"
        ) from None
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
    name = raw.get("merge_method")
    if name == "passthrough" or name == "arcee_fusion":
        raise MergeInputError(
            f"mergekit config {path}: merge_method {name!r} is not supported (README)"
        )
    method = get_method(str(name))
    root = path.parent
    models = raw.get("models") or []
    if not isinstance(models, list) or not models:
        raise MergeInputError(f"mergekit config {path}: 'models' must list the models to merge")
    base = raw.get("base_model")
    base_dir = _folder(base, "base_model", root) if base is not None else None
    experts, per_model = [], {}
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or "model" not in entry:
            raise MergeInputError(f"mergekit config {path}: models[{i}] needs a 'model' key")
        extra = sorted(set(entry) - {"model", "parameters"})
        if extra:
            raise MergeInputError(
                f"mergekit config {path}: models[{i}].{extra[0]} is not supported"
            )
        folder = _folder(entry["model"], f"models[{i}].model", root)
        if base_dir is not None and folder.resolve() == base_dir.resolve() and name not in NO_BASE:
            continue  # the base listed among the models (slerp, nearswap, model_stock configs)
        for key, value in (entry.get("parameters") or {}).items():
            where = f"models[{i}].parameters.{key}"
            if key not in PER_MODEL:
                raise MergeInputError(
                    f"mergekit config {path}: {where} is not a per-model parameter here"
                )
            per_model.setdefault(key, {})[len(experts)] = _scalar(value, where)
        experts.append(folder)
    if base_dir is None:
        if name not in NO_BASE:
            raise MergeInputError(f"mergekit config {path}: merge_method {name!r} needs base_model")
        base_dir = experts[0]  # W_0 only reconstructs W_t here: any listed model serves
    params = _defaults(method.name)
    for key, value in (raw.get("parameters") or {}).items():
        if key in INERT:
            continue
        params[RENAMED.get(key, key)] = _scalar(value, f"parameters.{key}")
    for key, values in per_model.items():
        missing = [i for i in range(len(experts)) if i not in values]
        if missing and key not in params:
            raise MergeInputError(
                f"mergekit config {path}: parameter {key!r} is given for some models but not for "
                f"models[{missing[0]}] and has no global value"
            )
        params[RENAMED.get(key, key)] = [
            values.get(i, params.get(key)) for i in range(len(experts))
        ]
    if method.name in GTA and "weight" not in per_model and "weight" not in params:
        raise MergeInputError(f"mergekit config {path}: {name} needs a weight for every model")
    method.parse_params(params, [str(i) for i in range(len(experts))])
    out_dtype = raw.get("out_dtype") or raw.get("dtype") or "bfloat16"
    if out_dtype not in OUT_DTYPES:
        raise MergeInputError(
            f"mergekit config {path}: out_dtype {out_dtype!r} is not supported; use bfloat16 or float32"
        )
    tok = raw.get("tokenizer_source")
    if tok == "union":
        raise MergeInputError(f"mergekit config {path}: tokenizer_source 'union' is not supported")
    tok_dir = base_dir if tok in (None, "base") else _folder(tok, "tokenizer_source", root)
    names = [f"{i}:{Path(e).name}" for i, e in enumerate(experts)]
    return MergeSpec(
        method=method.name,
        base=base_dir,
        experts=experts,
        output=Path(output),
        params=params,
        device=device,
        dtype=OUT_DTYPES[out_dtype],
        tokenizer_from=tok_dir,
        rest_policy="method",
        allow_duplicate_experts=base is None,
        expert_names=names,
        recipe=f"mergekit config {path.name}",
    )
