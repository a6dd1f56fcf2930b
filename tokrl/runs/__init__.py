"""Run any recipe: its `method:` picks a GRPO-family trainer (`tokrl.runs.grpo`) or an offline pipeline."""

from __future__ import annotations

from tokrl.pipelines.cdpo import run_cdpo
from tokrl.pipelines.dpo_data import run_dpo
from tokrl.pipelines.token_cleaning_run import run_clean
from tokrl.pipelines.treg import run_treg
from tokrl.recipe import RecipeError, load_recipe
from tokrl.runs.grpo import GRPO_METHODS, prepare_run, train_recipe
from tokrl.utils import did_you_mean

# Offline-scored methods: a pipeline of resumable stages (sample/score/train...), also run by `tokrl cdpo|treg|clean`.
PIPELINES = {"cdpo": run_cdpo, "treg": run_treg, "token_cleaning": run_clean}
# One training run, like the GRPO family (`tokrl.runs.grpo.train_recipe`).
SINGLE_RUNS = {"dpo": run_dpo}
METHODS = (*GRPO_METHODS, *SINGLE_RUNS, *PIPELINES)


def recipe_method(path, overrides=()) -> str | None:
    """The recipe's `method:` (None when missing: the GRPO checks then name the missing key)."""
    method = load_recipe(path, list(overrides)).get("method")
    if method is not None and method not in METHODS:
        raise RecipeError(f"{path}: unknown method '{method}'{did_you_mean(method, METHODS)}; "
                          f"known: {', '.join(METHODS)}")
    return method


def run_recipe(path, overrides=(), *, overwrite: bool = False, stage: str | None = None,
               resume: bool = False) -> dict:
    """Train (or run the pipeline of) any recipe; returns its summary."""
    method = recipe_method(path, overrides)
    if method in PIPELINES:
        if resume:
            raise RecipeError(f"{path}: the {method} pipeline resumes by itself (complete stages are skipped); "
                              "--resume is for one-run methods")
        return PIPELINES[method](path, list(overrides), overwrite=overwrite, stage=stage)
    if stage is not None:
        raise RecipeError(f"{path}: --stage is for the offline pipelines ({', '.join(PIPELINES)}); "
                          f"method '{method}' trains in one run")
    if method in SINGLE_RUNS:
        if overwrite or resume:
            raise RecipeError(f"{path}: method '{method}' takes trainer.resume_from_checkpoint, not --resume/--overwrite")
        return SINGLE_RUNS[method](path, overrides)
    return train_recipe(path, overrides, resume=resume, overwrite=overwrite)


def check_recipe(path, overrides=()) -> str:
    """Check every section of any recipe without loading a model; returns its method."""
    method = recipe_method(path, overrides)
    runner = PIPELINES.get(method) or SINGLE_RUNS.get(method)
    if runner is not None:
        runner(path, list(overrides), dry_run=True)
    else:
        prepare_run(path, overrides)
    return method


__all__ = ["METHODS", "PIPELINES", "SINGLE_RUNS", "check_recipe", "prepare_run", "recipe_method", "run_recipe",
           "train_recipe"]
