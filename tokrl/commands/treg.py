"""`tokrl treg RECIPE.yaml [key=value ...]`: the T-REG pipeline (an alias of `tokrl train` for method: treg)."""

from __future__ import annotations

from tokrl.commands.train import pipeline_alias
from tokrl.pipelines.treg import STAGES

HELP = "run the T-REG pipeline (sample, select, score, train): tokrl treg RECIPE.yaml [key=value ...]"
add_arguments, run = pipeline_alias("treg", STAGES)
