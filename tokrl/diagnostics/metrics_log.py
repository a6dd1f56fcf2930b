"""`MetricsLogCallback`: every `Trainer.log` call as one JSON line in `RUN_DIR/metrics.jsonl` (main process).

Keys are exactly what TRL logs (`loss`, `reward`, `entropy`, `weights/kept_frac`, ...) plus `step`. Lines are
appended with one `O_APPEND` write each, so a crash never damages earlier lines; `tokrl plot` reads the file.
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import TrainerCallback

from tokrl.diagnostics.token_dump import append_jsonl, read_jsonl

METRICS = "metrics.jsonl"


def _clean(value):
    """JSON-safe scalar: numbers stay numbers (NaN/inf -> null), tensors become floats, others strings."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


class MetricsLogCallback(TrainerCallback):
    """Append `{"step": global_step, **logs}` to `path` (default `args.output_dir/metrics.jsonl`) on each log."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None

    @classmethod
    def attach(cls, trainer, path: str | Path | None = None) -> "MetricsLogCallback":
        """Register on `trainer` (once per target file: attaching twice never writes each line twice)."""
        target = Path(path) if path is not None else Path(trainer.args.output_dir) / METRICS
        for existing in trainer.callback_handler.callbacks:
            if isinstance(existing, cls) and (existing.path or Path(trainer.args.output_dir) / METRICS) == target:
                return existing
        callback = cls(path)
        trainer.add_callback(callback)
        return callback

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = self.path or Path(args.output_dir) / METRICS
        record = {"step": int(state.global_step)}
        record.update({str(k): _clean(v) for k, v in logs.items()})
        append_jsonl(path, [record])


def read_metrics(path: str | Path) -> list[dict]:
    """Read `metrics.jsonl`; a torn last line is dropped, any other bad line is an error naming the line."""
    return [record for _, record in read_jsonl(path)]
