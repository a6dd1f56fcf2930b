"""`tokrl train RECIPE.yaml [key=value ...]`: one YAML file describes a run end to end, for every method.

GRPO-family methods (grpo, forking_grpo, thr_grpo) and dpo (weights from your data) train in one run; the offline
methods (cdpo, treg, token_cleaning) run their pipeline of resumable stages. `tokrl cdpo|treg|clean|dpo` are
aliases with the same arguments."""

from __future__ import annotations

import json
from functools import partial

import tokrl.runs
from tokrl.console import is_main_process
from tokrl.evaluation import headline

HELP = ("train any recipe (grpo, forking_grpo, thr_grpo, dpo; cdpo, treg and token_cleaning run their pipelines): "
        "tokrl train RECIPE.yaml [key=value ...]")


def add_arguments(parser, stages=None):
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=2")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in an output_dir that holds an earlier run (pipelines: redo complete stages)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the earlier run in output_dir from its last checkpoint (same metrics.jsonl)")
    parser.add_argument("--stage", choices=stages, default=None,
                        help="offline pipelines: run only this stage (the stages it reads must be complete)")


def run(args) -> int:
    summary = tokrl.runs.run_recipe(args.recipe, args.overrides, overwrite=args.overwrite, stage=args.stage,
                         resume=getattr(args, "resume", False))
    shown = {k: headline(v) if k.startswith("eval_") and isinstance(v, dict) else v
             for k, v in summary.items() if k != "trainer"}
    if is_main_process():
        print(json.dumps(shown, indent=1, default=str))
    return 0


def pipeline_alias(method: str, stages):
    """`add_arguments` and `run` of `tokrl cdpo|treg`: `tokrl train` for that method's recipes, same arguments."""

    def run(args) -> int:
        summary = tokrl.runs.PIPELINES[method](args.recipe, args.overrides, overwrite=args.overwrite, stage=args.stage)
        print(json.dumps(summary, indent=1, default=str))
        return 0

    return partial(add_arguments, stages=stages), run
