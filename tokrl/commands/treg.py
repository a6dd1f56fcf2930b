"""`tokrl treg RECIPE.yaml [key=value ...]`: the T-REG pipeline, every stage in order, complete ones skipped."""

from __future__ import annotations

import json

HELP = "run the T-REG pipeline (sample, select, score, train): tokrl treg RECIPE.yaml [key=value ...]"


def add_arguments(parser):
    from tokrl.pipelines.treg import STAGES

    parser.add_argument("recipe", help="recipe YAML file (e.g. recipes/treg_arithmetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=2")
    parser.add_argument("--overwrite", action="store_true", help="redo stages that are already complete")
    parser.add_argument("--stage", choices=STAGES, default=None,
                        help="run only this stage (the stages it reads must be complete)")


def validate(path, overrides=()) -> None:
    """Check every section of a recipe without loading a model (`tokrl validate`)."""
    from tokrl.pipelines.treg import run_treg

    run_treg(path, list(overrides), dry_run=True)


def run(args) -> int:
    from tokrl.pipelines.treg import run_treg

    summary = run_treg(args.recipe, args.overrides, overwrite=args.overwrite, stage=args.stage)
    print(json.dumps(summary, indent=1, default=str))
    return 0
