"""What every run leaves in its directory: the resolved recipe, metrics.jsonl, token dumps, a summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tokrl.recipe import RecipeError


def write_run_info(run_dir: Path, recipe: dict, source) -> None:
    """The resolved recipe (after overrides) next to the outputs, so a run is auditable and re-runnable."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(f"# resolved from {source}\n" + yaml.safe_dump(recipe, sort_keys=False))


# What a GRPO-family run writes in its directory; --overwrite removes these and nothing else.
RUN_OUTPUTS = ("recipe.yaml", "metrics.jsonl", "token_values.jsonl", "run_info.json", "summary.json", "final",
               "plots", "token_report.html")


def claim_run_dir(run_dir: Path, *, resume, overwrite: bool, file) -> None:
    """Decide, before a model is loaded or a file written, whether a run may use `run_dir`.

    A missing or empty directory is fine. A non-empty directory that is not a tokrl run (no recipe.yaml) is
    refused. An earlier tokrl run there needs a choice: `resume` (a checkpoint path or True: continue it; metrics
    logged after that checkpoint are dropped so the curve is one run) or `overwrite` (its outputs are removed,
    other files are kept); without one, a one-line error names both.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        if resume and resume is not True and not Path(str(resume)).is_dir():
            raise RecipeError(f"{file}: nothing to resume: {resume} does not exist")
        if resume is True:
            raise RecipeError(f"{file}: nothing to resume in {run_dir} (no earlier run there)")
        return
    if not (run_dir / "recipe.yaml").is_file():
        raise RecipeError(f"{file}: output_dir {run_dir} is not empty and is not a tokrl run directory; "
                          "choose another output_dir (tokrl never writes into a directory it did not create)")
    if resume and overwrite:
        raise RecipeError(f"{file}: --resume and --overwrite contradict each other; pick one")
    if overwrite:
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for path in run_dir.glob("checkpoint-*"):
            shutil.rmtree(path)
        return
    if not resume:
        raise RecipeError(f"{file}: output_dir {run_dir} holds an earlier run; continue it with --resume or start "
                          "it again with --overwrite (or set another output_dir)")
    checkpoint = Path(str(resume)) if resume is not True else last_checkpoint(run_dir)
    if checkpoint is None:
        raise RecipeError(f"{file}: nothing to resume in {run_dir}: it holds no checkpoint-* directory")
    keep_steps_up_to(run_dir, int(checkpoint.name.rsplit("-", 1)[-1]) if "-" in checkpoint.name else None)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `run_dir`: transformers writes `trainer_state.json` after the weights
    and the optimizer, so a checkpoint cut short (a kill, a full disk) lacks it and is passed over."""
    found = [p for p in Path(run_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def keep_steps_up_to(run_dir: Path, step: int | None) -> None:
    """Drop metrics and token dumps logged after `step` (the checkpoint a resumed run continues from), so that
    the resumed run's lines follow the checkpoint's without a repeated or orphaned step."""
    if step is None:
        return
    for name in ("metrics.jsonl", "token_values.jsonl"):
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if not isinstance(record, dict) or int(record.get("step", 0) or 0) <= step:
                kept.append(line)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(path)
