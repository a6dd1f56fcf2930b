"""`tokrl dpo RECIPE.yaml [key=value ...]`: weighted DPO on your own preference data (pair and token weights).

An alias of `tokrl train` for `method: dpo` recipes."""

from __future__ import annotations

import json

from tokrl.pipelines.dpo_data import run_dpo

HELP = "train DPO on your own pairs with per-pair and per-token weight columns: tokrl dpo RECIPE.yaml [key=value ...]"


def add_arguments(parser):
    parser.add_argument("recipe", help="recipe YAML file (e.g. recipes/dpo_weights_from_data.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=2")


def run(args) -> int:
    print(json.dumps(run_dpo(args.recipe, args.overrides), indent=1, default=str))
    return 0
