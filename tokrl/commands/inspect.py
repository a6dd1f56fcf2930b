"""`tokrl inspect SOURCE --out report.html`: the per-token heatmap of a run dir or a scored dataset."""

from __future__ import annotations

from pathlib import Path

from tokrl.reports.heatmap import write_report
from tokrl.reports.sources import load_source

HELP = "render per-token values (a run's token dumps or a scored dataset) as one self-contained HTML heatmap."


def add_arguments(parser) -> None:
    parser.add_argument("source", help="run dir (token_values.jsonl), save_to_disk dir, .parquet or .jsonl file")
    parser.add_argument("--out", default=None, help="HTML file to write (default: SOURCE/token_report.html for a "
                        "dir, else next to the file)")
    parser.add_argument("--value", default=None, help="value to colour by first (e.g. weight, entropy, thr)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for dataset ids: path, hub id, embedded "
                        "model name or 'tiny' (default: from the dataset's metadata)")
    parser.add_argument("--split", default=None, help="split of a DatasetDict (default: train, else the first)")
    parser.add_argument("--max-samples", type=int, default=1000, help="samples embedded in the page (default "
                        "1000); a longer run is cut to whole dumps at evenly spaced steps")
    parser.add_argument("--page-size", type=int, default=20, help="samples drawn per page (default 20)")


def default_out(source: Path) -> Path:
    return source / "token_report.html" if source.is_dir() else source.with_name(source.stem + "_report.html")


def inspect(source, out=None, value=None, tokenizer=None, split=None, max_samples=1000, page_size=20) -> Path:
    """Write the heatmap for `source`; returns the HTML path. The Python entry point of `tokrl inspect`."""
    if max_samples < 1 or page_size < 1:
        raise ValueError("--max-samples and --page-size must be >= 1")
    source = Path(source)
    samples, meta = load_source(source, max_samples=max_samples, tokenizer=tokenizer, split=split)
    return write_report(out or default_out(source), samples, meta, initial=value, page_size=page_size)


def run(args) -> int:
    path = inspect(args.source, args.out, args.value, args.tokenizer, args.split, args.max_samples, args.page_size)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
