"""`tokrl clean RECIPE.yaml [key=value ...]`: Token Cleaning stages (score, select, train, eval), resumable.

An alias of `tokrl train` for `method: token_cleaning` recipes that prints the report as a table."""

from __future__ import annotations

import logging

from tokrl.pipelines.token_cleaning_run import run_clean, summary_table

HELP = "Token Cleaning: score response tokens by influence, keep the top ratio, SFT on them (resumable stages)."


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="token-cleaning recipe YAML (e.g. recipes/token_cleaning_arithmetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. cleaning.keep_ratio=0.5")
    parser.add_argument("--overwrite", action="store_true", help="redo finished stages instead of skipping them")


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run_clean(args.recipe, args.overrides, overwrite=args.overwrite)
    print(summary_table(report))
    print(f"report: {report['output_dir']}/report.json")
    return 0
