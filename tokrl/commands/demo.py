"""`tokrl demo`: uniform GRPO vs forking-token GRPO on SmolLM2 + arithmetic, same budget, on a CPU.

Trains both recipes, evaluates greedy accuracy before and after, plots reward and kept-token fraction, renders the
forking run's token heatmap, and reports which tokens the forking mask kept (answer digits vs the rest).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tokrl.commands.inspect import inspect
from tokrl.commands.plot import plot
from tokrl.diagnostics import METRICS, TOKEN_VALUES, read_metrics, read_token_values
from tokrl.recipe import RecipeError
from tokrl.runs import train_recipe

HELP = "run the demo: uniform vs forking-token GRPO on the embedded SmolLM2 + arithmetic task (CPU, ~15 min)"
# Uniform vs the paper's forking mask; add recipes/forking_grpo_sequence_arithmetic.yaml for the per-response variant.
DEFAULT_RECIPES = ("recipes/grpo_arithmetic.yaml", "recipes/forking_grpo_arithmetic.yaml")


def add_arguments(parser):
    parser.add_argument("--out", default="runs/demo", help="demo directory (default runs/demo)")
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), help="recipes to compare")
    parser.add_argument("--steps", type=int, default=None, help="training steps per recipe (default: the recipe's)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every recipe")


def reward_blocks(run_dir: Path, block: int = 10) -> list[float]:
    """Mean training reward over consecutive blocks of `block` logged steps."""
    rewards = [r["reward"] for r in _metrics(run_dir) if r.get("reward") is not None and "loss" in r]
    return [round(sum(rewards[i:i + block]) / len(rewards[i:i + block]), 3) for i in range(0, len(rewards), block)]


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    return read_metrics(path) if path.is_file() else []


def kept_by_token_kind(run_dir: Path) -> dict[str, dict[str, float]]:
    """From the token dumps: how often the weighter kept digit tokens (the answer) vs other tokens."""
    path = run_dir / TOKEN_VALUES
    counts = {"digits": [0, 0, 0.0], "other": [0, 0, 0.0]}  # kept, total, entropy sum
    if not path.is_file():
        return {}
    for record in read_token_values(path):
        pieces, weights, entropies = record["pieces"], record["values"].get("weight"), record["values"].get("entropy")
        if not pieces or weights is None:
            continue
        for i, (piece, weight) in enumerate(zip(pieces, weights)):
            if weight is None:
                continue
            kind = "digits" if piece.strip().isdigit() else "other"
            counts[kind][0] += weight > 0
            counts[kind][1] += 1
            counts[kind][2] += (entropies[i] or 0.0) if entropies else 0.0
    return {k: {"kept_frac": round(c[0] / c[1], 3), "tokens": c[1], "mean_entropy": round(c[2] / c[1], 3)}
            for k, c in counts.items() if c[1]}


def comparison_plot(runs: dict[str, Path], out: Path) -> Path:
    import matplotlib  # deferred: matplotlib is heavy and only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, run_dir in runs.items():
        rows = [r for r in _metrics(run_dir) if "loss" in r and r.get("reward") is not None]
        steps = [r["step"] for r in rows]
        rewards = [r["reward"] for r in rows]
        smooth = [sum(rewards[max(0, i - 4):i + 1]) / len(rewards[max(0, i - 4):i + 1]) for i in range(len(rewards))]
        axes[0].plot(steps, smooth, label=name)
        kept = [r.get("weights/kept_frac") for r in rows]
        axes[1].plot(steps, kept, label=name)
    axes[0].set(title="training reward (5-step mean)", xlabel="step", ylabel="reward")
    axes[1].set(title="kept-token fraction", xlabel="step", ylabel="fraction of completion tokens", ylim=(0, 1.05))
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipes:
        if not Path(recipe).is_file():
            raise RecipeError(f"{recipe}: recipe file not found (run `make demo` from the repository root)")
    runs, summaries, before = {}, {}, None
    t_start = time.time()
    for recipe in args.recipes:
        name = Path(recipe).stem
        run_dir = out / name
        overrides = [f"output_dir={run_dir}", "trainer.token_dump_steps=5", "trainer.save_strategy='no'"]
        if args.steps:
            overrides.append(f"trainer.max_steps={args.steps}")
        if before is not None:  # every recipe starts from the same model: evaluate it once
            overrides.append("eval.before=false")
        print(f"[tokrl demo] training {name} ...", flush=True)
        summary = train_recipe(recipe, overrides + list(args.overrides), overwrite=True)  # the demo's own dirs
        summary.pop("trainer")
        before = before or summary.get("eval_before")
        summary["eval_before"] = before
        summary["reward_per_10_steps"] = reward_blocks(run_dir)
        summary["kept_by_token_kind"] = kept_by_token_kind(run_dir)
        summary["plots"] = [str(p) for p in plot(run_dir)]
        runs[name], summaries[name] = run_dir, summary
    comparison = comparison_plot(runs, out / "comparison.png")
    forking = [name for name in runs if "forking" in name] or list(runs)
    heatmap = inspect(runs[forking[0]], value="weight")
    report = {"runs": summaries, "comparison_plot": str(comparison), "heatmap": str(heatmap),
              "minutes": round((time.time() - t_start) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    print("\n[tokrl demo] results (greedy accuracy on the eval split; mean training reward per 10 steps)")
    for name, s in summaries.items():
        acc_b = s["eval_before"]["accuracy"] if s.get("eval_before") else float("nan")
        acc_a = s["eval_after"]["accuracy"] if s.get("eval_after") else float("nan")
        print(f"  {name:28s} accuracy {acc_b:.2f} -> {acc_a:.2f}   reward/10 steps {s['reward_per_10_steps']}")
        if s["kept_by_token_kind"]:
            print(f"  {'':28s} kept fraction by token kind: {s['kept_by_token_kind']}")
    print(f"  plot: {comparison}\n  heatmap: {heatmap}\n  total: {report['minutes']} min")
    return 0
