"""`tokrl score {cdpo,treg} RECIPE.yaml`: run a pipeline up to its scoring stage (complete stages skipped), e.g.
to inspect the per-token columns (`tokrl inspect OUTPUT_DIR/score`) before training."""

from __future__ import annotations

import json

from tokrl.runs import PIPELINES as RUNNERS

HELP = "run a pipeline up to its scoring stage: tokrl score {cdpo,treg} RECIPE.yaml [key=value ...]"
PIPELINES = ("cdpo", "treg")


def add_arguments(parser):
    parser.add_argument("pipeline", choices=PIPELINES, help="which method's scoring pipeline")
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sample.num_prompts=8")
    parser.add_argument("--overwrite", action="store_true", help="redo stages up to score even if complete")


def run(args) -> int:
    summary = RUNNERS[args.pipeline](args.recipe, args.overrides, overwrite=args.overwrite, stop_after="score")
    print(json.dumps(summary, indent=1, default=str))
    return 0
