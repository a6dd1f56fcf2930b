"""What every run leaves in its directory: the resolved recipe, metrics.jsonl, token dumps, a summary."""

from __future__ import annotations

from pathlib import Path

import yaml

from tokrl.diagnostics.metrics_log import MetricsLogCallback


def write_run_info(run_dir: Path, recipe: dict, source) -> None:
    """The resolved recipe (after overrides) next to the outputs, so a run is auditable and re-runnable."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(f"# resolved from {source}\n" + yaml.safe_dump(recipe, sort_keys=False))


def attach_run_callbacks(trainer, run_dir: Path) -> None:
    """metrics.jsonl in the run dir (token dumps are attached by the trainers themselves)."""
    MetricsLogCallback.attach(trainer, Path(run_dir) / "metrics.jsonl")
