"""Training curves from `metrics.jsonl` (or a `trainer_state.json` log history) as PNGs, with matplotlib (Agg).

One PNG per curve: reward, kept-token fraction (`weights/kept_frac`), loss and entropy over steps, plus any
weighter threshold that was logged (`weights/entropy_threshold`, `weights/thr_mean`, ...). A curve whose key was
never logged is skipped, not drawn empty.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokrl.diagnostics.metrics_log import METRICS, read_metrics

# file stem -> (metric key, y label)
CURVES = {
    "reward": ("reward", "mean reward"),
    "kept_frac": ("weights/kept_frac", "fraction of tokens with non-zero weight"),
    "loss": ("loss", "loss"),
    "entropy": ("entropy", "mean token entropy (nats)"),
}
EXTRA_PREFIX = "weights/"
EXTRA_SKIP = {"weights/kept_frac", "weights/min", "weights/max"}


def load_history(run_dir: str | Path) -> tuple[list[dict], Path]:
    """Logged records, oldest first: metrics.jsonl, else the newest trainer_state.json's log_history."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS
    if path.is_file():
        return read_metrics(path), path
    states = [run_dir / "trainer_state.json"] + sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
    states = [p for p in states if p.is_file()]
    if states:
        return json.loads(states[-1].read_text()).get("log_history", []), states[-1]
    raise FileNotFoundError(f"{run_dir}: no {METRICS} (nor trainer_state.json) to plot")


def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric; a step logged twice keeps its last value."""
    by_step: dict[int, float] = {}
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "step" in record:
            by_step[int(record["step"])] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per logged curve into `out_dir` (default `run_dir/plots`); returns the paths written."""
    import matplotlib  # deferred: matplotlib is heavy and only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    run_dir = Path(run_dir)
    history, source = load_history(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = dict(CURVES)
    extra = sorted({k for r in history for k in r if k.startswith(EXTRA_PREFIX) and k not in EXTRA_SKIP})
    for key in extra:
        curves.setdefault(key.replace("/", "_"), (key, key))
    paths = []
    for stem, (key, label) in curves.items():
        steps, values = series(history, key)
        if not steps:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        ax.plot(steps, values, color="C0", linewidth=1.8, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(f"{key} ({run_dir.name})")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, metadata={"Source": str(source), "Title": key})
        plt.close(fig)
        paths.append(path)
    if not paths:
        raise ValueError(f"{source}: none of {', '.join(k for k, _ in CURVES.values())} was logged")
    return paths
