"""`tokrl validate RECIPE.yaml ...`: check recipes without loading a model or training."""

from __future__ import annotations

import importlib
from pathlib import Path

from tokrl.methods import PIPELINE_METHODS
from tokrl.recipe import RecipeError, load_recipe

HELP = ("check recipes (keys, types, ranges, names, data) without loading a model: "
        "tokrl validate RECIPE.yaml [...] [key=value ...]")


def add_arguments(parser):
    parser.add_argument("recipes", nargs="+", metavar="RECIPE_OR_OVERRIDE",
                        help="recipe YAML files, then key=value overrides applied to each (as for tokrl train)")


def validate_recipe(path, overrides=()) -> str:
    """Validate one recipe; returns its method name. Pipeline methods are checked by their own command."""
    recipe = load_recipe(path, list(overrides))
    method = recipe.get("method")
    if method in PIPELINE_METHODS:
        module = importlib.import_module(f"tokrl.commands.{PIPELINE_METHODS[method]}")
        if not hasattr(module, "validate"):
            raise RecipeError(f"{path}: command '{PIPELINE_METHODS[method]}' cannot validate recipes")
        module.validate(path, list(overrides))
        return method
    from tokrl.commands.train import prepare_run

    prepare_run(path, overrides)
    return method


def split_overrides(items) -> tuple[list[str], list[str]]:
    """`a.yaml b.yaml trainer.max_steps=2` -> (recipes, overrides): an item with '=' that is not a file overrides."""
    recipes = [item for item in items if "=" not in item or Path(item).is_file()]
    return recipes, [item for item in items if item not in recipes]


def run(args) -> int:
    recipes, overrides = split_overrides(args.recipes)
    if not recipes:
        raise RecipeError("tokrl validate: give at least one recipe file before the key=value overrides")
    for path in recipes:
        method = validate_recipe(path, overrides)
        print(f"ok  {path}  (method: {method})")
    return 0
