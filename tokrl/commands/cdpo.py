"""`tokrl cdpo RECIPE.yaml [key=value ...]`: the cDPO pipeline (an alias of `tokrl train` for method: cdpo)."""

from __future__ import annotations

from tokrl.commands.train import pipeline_alias
from tokrl.pipelines.cdpo import STAGES

HELP = "run the cDPO pipeline (sample, select, contrast, score, train): tokrl cdpo RECIPE.yaml [key=value ...]"
add_arguments, run = pipeline_alias("cdpo", STAGES)
