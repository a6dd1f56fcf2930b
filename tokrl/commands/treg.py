"""`tokrl treg RECIPE.yaml [key=value ...]`: the T-REG pipeline (an alias of `tokrl train` for method: treg)."""

from __future__ import annotations

import json
from functools import partial

from tokrl.commands import train
from tokrl.pipelines.treg import STAGES, run_treg

HELP = "run the T-REG pipeline (sample, select, score, train): tokrl treg RECIPE.yaml [key=value ...]"
add_arguments = partial(train.add_arguments, stages=STAGES)


def run(args) -> int:
    summary = run_treg(args.recipe, args.overrides, overwrite=args.overwrite, stage=args.stage)
    print(json.dumps(summary, indent=1, default=str))
    return 0
