"""`tokrl validate RECIPE.yaml ...`: check recipes without loading a model or training."""

from __future__ import annotations

import importlib

from tokrl.methods import PIPELINE_METHODS
from tokrl.recipe import RecipeError, load_recipe

HELP = "check recipes (keys, types, names) without loading a model: tokrl validate RECIPE.yaml [...]"


def add_arguments(parser):
    parser.add_argument("recipes", nargs="+", help="recipe YAML files")


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


def run(args) -> int:
    for path in args.recipes:
        method = validate_recipe(path)
        print(f"ok  {path}  (method: {method})")
    return 0
