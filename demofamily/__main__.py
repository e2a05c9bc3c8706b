"""python -m demofamily build [--output DIR] [--set KEY=VALUE ...]
python -m demofamily build-adapters [--output DIR] [--base DIR] [--set KEY=VALUE ...]
python -m demofamily fold-adapter ADAPTER OUTPUT [--base DIR]"""

import argparse
import sys
from pathlib import Path

import pydantic

from demofamily.build import ROOT, build
from demofamily.recipe import LoraRecipe, Recipe
from mergeeval.errors import InputError

MODELS = ROOT / "demofamily" / "models"


def _build_adapters(args, fields: dict) -> list[Path]:
    from demofamily.lora import build_adapters, family_recipe, require_peft

    require_peft()
    lora = {k: fields.pop(k) for k in list(fields) if k in LoraRecipe.model_fields}
    try:  # the family's recipe as the base recorded it, so the data is what its experts saw
        recipe = Recipe.model_validate({**family_recipe(args.base).model_dump(), **fields})
        lora = LoraRecipe.model_validate(lora)
    except pydantic.ValidationError as e:
        raise InputError(f"--set: {e}") from None
    return build_adapters(
        args.output,
        recipe,
        lora,
        base=args.base,
        experts=args.experts,
        log=lambda m: print(m, flush=True),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demofamily")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the demo data, train the base and the three experts")
    a = sub.add_parser(
        "build-adapters",
        help="train a LoRA adapter of the shipped base per domain (PEFT), on its expert's data; "
        "writes only OUTPUT/lora_{math,code,if}",
    )
    for p, what in (
        (b, "a recipe field"),
        (
            a,
            "a field of the base's recorded recipe or of the adapters' (lora_rank, lora_steps, ...)",
        ),
    ):
        p.add_argument("--output", type=Path, default=MODELS)
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help=f"override {what}"
        )
    a.add_argument("--base", type=Path, default=MODELS / "base", help="the base model's folder")
    a.add_argument(
        "--experts",
        type=Path,
        default=MODELS,
        help="folder of the full experts, whose tokenizer and template files each adapter takes",
    )
    f = sub.add_parser(
        "fold-adapter",
        help="fold an adapter into its base (PEFT merge_and_unload) as a full bf16 model folder",
    )
    f.add_argument("adapter", type=Path)
    f.add_argument("output", type=Path)
    f.add_argument("--base", type=Path, help="default: the adapter's base_model_name_or_path")
    args = ap.parse_args(argv)
    fields = dict(kv.split("=", 1) for kv in getattr(args, "set", []))
    try:
        if args.cmd == "fold-adapter":
            from demofamily.lora import fold

            folders = [fold(args.adapter, args.output, args.base)]
        elif args.cmd == "build-adapters":
            folders = _build_adapters(args, fields)
        else:
            recipe = Recipe.model_validate(fields)
            folders = build(args.output, recipe, log=lambda m: print(m, flush=True))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in folders:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
