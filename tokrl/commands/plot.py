"""`tokrl plot RUN_DIR`: reward, kept-token fraction, loss and entropy curves as PNGs."""

from __future__ import annotations

from tokrl.reports.plots import plot_run

HELP = "plot a run's logged metrics (metrics.jsonl) as PNGs: reward, kept-token fraction, loss, entropy."


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="run directory holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR/plots)")


def plot(run_dir, out=None) -> list:
    """Write the PNGs and return their paths (what `tokrl demo` calls)."""
    return plot_run(run_dir, out)


def run(args) -> int:
    for path in plot(args.run_dir, args.out):
        print(path)
    return 0
