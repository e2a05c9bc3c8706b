"""python -m demofamily build [--output DIR] [--seed N] [--set KEY=VALUE ...]"""

import argparse
import sys
from pathlib import Path

from demofamily.build import ROOT, build
from demofamily.recipe import Recipe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demofamily")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the demo data, train the base and the three experts")
    b.add_argument("--output", type=Path, default=ROOT / "demofamily" / "models")
    b.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field"
    )
    args = ap.parse_args(argv)
    fields = dict(kv.split("=", 1) for kv in args.set)
    recipe = Recipe.model_validate(fields)
    for p in build(args.output, recipe, log=lambda m: print(m, flush=True)):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
