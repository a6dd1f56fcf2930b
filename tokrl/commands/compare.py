"""`tokrl compare SPEC.yaml [--jobs N]`: several methods side by side over seeds, with intervals and a report."""

from __future__ import annotations

from tokrl.compare.report import write_report
from tokrl.compare.runner import claim_output_dir, run_all
from tokrl.compare.spec import load_spec
from tokrl.runs import check_recipe

HELP = "compare methods over seeds (arms x seeds as runs, intervals, report): tokrl compare SPEC.yaml [--jobs N]"
DEFAULT_JOBS = 2  # measured on a shared 2-core CPU: two 1-thread runs beat one 2-thread run (docs/results.md)


def add_arguments(parser):
    parser.add_argument("spec", help="comparison spec YAML (see compare/embedded.yaml)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"runs at once (default {DEFAULT_JOBS}; each gets cores/jobs threads, at least 1)")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--output-dir", default=None, help="comparison folder (default: the spec's output_dir)")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arms to run now (default: all); the report still covers every arm")
    parser.add_argument("--report-only", action="store_true",
                        help="only (re)write the report from the runs finished so far; start nothing")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def validate_spec(spec) -> None:
    """Every arm's recipe with its overrides, checked as `tokrl validate` does, before any run starts."""
    seen = set()
    for run in spec.runs:
        if run.arm not in seen:
            seen.add(run.arm)
            check_recipe(run.recipe, run.overrides)


def run(args) -> int:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    spec = load_spec(args.spec, args.output_dir)
    if not args.report_only:
        validate_spec(spec)
    failed = []
    if args.report_only:
        claim_output_dir(spec)
    else:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
        outcome = run_all(spec, jobs=args.jobs, threads=args.threads, progress=not args.no_progress, arms=arms)
        failed = outcome["failed"]
        print(f"[compare] {len(outcome['finished'])} runs finished, {len(outcome['skipped'])} already done, "
              f"{len(failed)} failed ({outcome['jobs']} at once, {outcome['threads']} threads each)", flush=True)
    summary = write_report(spec, num_resamples=args.resamples)
    print(f"[compare] report: {spec.output_dir / 'results.md'} ({summary['runs']['finished']} of "
          f"{summary['runs']['planned']} runs)", flush=True)
    return 1 if failed else 0
