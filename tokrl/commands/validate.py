"""`tokrl validate RECIPE.yaml ...`: check recipes without loading a model or training."""

from __future__ import annotations

from pathlib import Path

from tokrl.recipe import RecipeError
from tokrl.runs import check_recipe

HELP = ("check recipes (keys, types, ranges, names, data) without loading a model: "
        "tokrl validate RECIPE.yaml [...] [key=value ...]")


def add_arguments(parser):
    parser.add_argument("recipes", nargs="+", metavar="RECIPE_OR_OVERRIDE",
                        help="recipe YAML files, then key=value overrides applied to each (as for tokrl train)")


def split_overrides(items) -> tuple[list[str], list[str]]:
    """`a.yaml b.yaml trainer.max_steps=2` -> (recipes, overrides): an item with '=' that is not a file overrides."""
    recipes = [item for item in items if "=" not in item or Path(item).is_file()]
    return recipes, [item for item in items if item not in recipes]


def run(args) -> int:
    recipes, overrides = split_overrides(args.recipes)
    if not recipes:
        raise RecipeError("tokrl validate: give at least one recipe file before the key=value overrides")
    for path in recipes:
        method = check_recipe(path, overrides)
        print(f"ok  {path}  (method: {method})")
    return 0
