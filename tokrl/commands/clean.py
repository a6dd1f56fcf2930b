"""`tokrl clean RECIPE.yaml [key=value ...]`: Token Cleaning stages (score, select, train, eval), resumable."""

from __future__ import annotations

HELP = "Token Cleaning: score response tokens by influence, keep the top ratio, SFT on them (resumable stages)."


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="token-cleaning recipe YAML (e.g. recipes/token_cleaning_arithmetic.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. cleaning.keep_ratio=0.5")
    parser.add_argument("--overwrite", action="store_true", help="redo finished stages instead of skipping them")


def run(args) -> int:
    import logging

    from tokrl.pipelines.token_cleaning_run import run_clean, summary_table
    from tokrl.recipe import load_recipe

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    recipe = load_recipe(args.recipe, args.overrides)
    report = run_clean(recipe, args.recipe, overwrite=args.overwrite)
    print(summary_table(report))
    print(f"report: {recipe['output_dir']}/report.json")
    return 0


def validate(path, overrides=()) -> None:
    """Check a token-cleaning recipe without loading a model (used by `tokrl validate`)."""
    from tokrl.pipelines.token_cleaning_run import check_recipe
    from tokrl.recipe import load_recipe

    check_recipe(load_recipe(path, list(overrides)), path)
