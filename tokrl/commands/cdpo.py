"""`tokrl cdpo RECIPE.yaml [key=value ...]`: the cDPO pipeline (an alias of `tokrl train` for method: cdpo)."""

from __future__ import annotations

import json
from functools import partial

from tokrl.commands import train
from tokrl.pipelines.cdpo import STAGES, run_cdpo

HELP = "run the cDPO pipeline (sample, select, contrast, score, train): tokrl cdpo RECIPE.yaml [key=value ...]"
add_arguments = partial(train.add_arguments, stages=STAGES)


def run(args) -> int:
    summary = run_cdpo(args.recipe, args.overrides, overwrite=args.overwrite, stage=args.stage)
    print(json.dumps(summary, indent=1, default=str))
    return 0
