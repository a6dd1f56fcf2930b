"""What one finished run of a comparison contributes: its final eval and its training curves, read from the run
dir the method's own command left (summary.json for `tokrl train` and the DPO pipelines, report.json for token
cleaning), reduced to one `result.json` that the report reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokrl.compare.spec import CLEANING, PREFERENCE, Run
from tokrl.diagnostics.metrics_log import read_metrics
from tokrl.reports.plots import series
from tokrl.utils import write_json_atomic

RESULT = "result.json"
STAT_KEYS = {"kept_frac": "weights/kept_frac", "weight_mean": "weights/mean", "weight_std": "weights/std"}


def run_key(run: Run) -> str:
    """What defines a run: its command, its recipe's text and its overrides (not where the files live). A
    finished run whose definition changed is refused by the runner and left out of the report."""
    overrides = [o for o in run.overrides if not o.startswith("output_dir=")]
    text = Path(run.recipe).read_text() if Path(run.recipe).is_file() else str(run.recipe)
    return hashlib.sha256(json.dumps([run.command, text, overrides]).encode()).hexdigest()[:16]


def output_file(run: Run) -> Path:
    """The file a method's command writes last: its existence means the command finished."""
    return run.run_dir / ("report.json" if run.family == CLEANING else "summary.json")


def final_eval(run: Run) -> dict:
    """The after-training eval: accuracy, pass@k and per-prompt scores when the run recorded them."""
    data = json.loads(output_file(run).read_text())
    if run.family == CLEANING:
        trained = {k: v for k, v in data.get("variants", {}).items() if k != "base" and isinstance(v, dict)
                   and "eval" in v}
        if len(trained) != 1:
            raise ValueError(f"{output_file(run)}: a comparison arm must train one cleaning variant, found "
                             f"{sorted(trained) or 'none'} (set cleaning.variants to one variant)")
        (variant, entry), = trained.items()
        result = dict(entry["eval"])
        selection = entry.get("selection") or {}
        kept = selection.get("kept_frac", selection.get("kept_fraction"))
        if isinstance(kept, (int, float)):
            result["kept_frac"] = float(kept)
        result["variant"] = variant
        return result
    return dict(data.get("eval_after") or {})


def metrics_file(run: Run) -> Path | None:
    """The run's training log: its own metrics.jsonl, else the one its training stage wrote."""
    top = run.run_dir / "metrics.jsonl"
    if top.is_file():
        return top
    found = sorted(run.run_dir.rglob("metrics.jsonl"), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def curves(path: Path | None) -> dict:
    """Reward per step, weight statistics averaged over steps, seconds per step and tokens per second."""
    if path is None:
        return {"reward": {"steps": [], "values": []}}
    history = read_metrics(path)
    steps, rewards = series(history, "reward")
    out: dict = {"reward": {"steps": steps, "values": rewards}}
    for name, key in STAT_KEYS.items():
        _, values = series(history, key)
        if values:
            out[name] = sum(values) / len(values)
    _, kept = series(history, STAT_KEYS["kept_frac"])
    out["kept_frac_curve"] = kept
    _, times = series(history, "step_time")
    if times:
        out["step_time"] = sum(times) / len(times)
        _, tokens = series(history, "num_tokens")
        if tokens:
            out["tokens_per_s"] = tokens[-1] / sum(times)
    _, runtime = series(history, "train_runtime")
    if runtime:
        out["train_runtime"] = runtime[-1]
    return out


def pipeline_training(run: Run) -> dict:
    """A DPO pipeline's training statistics, from its train stage's record in summary.json (the stage's trainer
    logs into its own checkpoint folder): weight statistics averaged over the logged steps, seconds per step."""
    if run.family != PREFERENCE or not output_file(run).is_file():
        return {}
    train = json.loads(output_file(run).read_text()).get("train") or {}
    logged = train.get("mean_logged") or {}
    out = {name: float(logged[key]) for name, key in STAT_KEYS.items() if isinstance(logged.get(key), (int, float))}
    if train.get("seconds") and train.get("steps"):
        out["step_time"] = float(train["seconds"]) / int(train["steps"])
    return out


def collect(run: Run, wall_seconds: float | None, threads: int) -> dict:
    """The run's result record (see module doc); raises when the run's outputs are incomplete."""
    wall = None if wall_seconds is None else round(wall_seconds, 1)
    result = {"arm": run.arm, "seed": run.seed, "method": run.method, "command": ["tokrl", *run.argv],
              "wall_seconds": wall, "threads": threads, "eval": final_eval(run)}
    result.update(curves(metrics_file(run)))
    result.update({k: v for k, v in pipeline_training(run).items() if k not in result})
    if "kept_frac" in result["eval"] and "kept_frac" not in result:
        result["kept_frac"] = result["eval"]["kept_frac"]
    return result


def load_result(run: Run, *, current_only: bool = False) -> dict | None:
    """The run's result.json, or None; `current_only`: None too when it came from a different command."""
    path = run.run_dir / RESULT
    result = json.loads(path.read_text()) if path.is_file() else None
    if current_only and result is not None and result.get("key") != run_key(run):
        return None
    if result is not None:  # records written before pipeline_training existed
        result.update({k: v for k, v in pipeline_training(run).items() if k not in result})
    return result
