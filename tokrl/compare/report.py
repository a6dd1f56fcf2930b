"""The comparison report: results.json, results.md and PNGs from the finished runs' result.json files.

Per arm: final greedy accuracy and pass@k as mean +- 95% t-interval over seeds; the paired difference to the
baseline arm with a bootstrap interval over eval prompts x seeds and the verdict that interval supports; kept
fraction and weight statistics; seconds per step and tokens per second; the compute all runs used.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from tokrl.compare.results import load_result
from tokrl.compare.spec import Spec
from tokrl.compare.stats import mean_ci, paired_bootstrap, verdict
from tokrl.utils import write_json_atomic

SPEED_KEYS = ("kept_frac", "weight_mean", "weight_std", "step_time", "tokens_per_s", "wall_seconds")


def metric_names(results: list[dict]) -> list[str]:
    names = {k for r in results for k, v in r["eval"].items()
             if (k == "accuracy" or k.startswith("pass@")) and isinstance(v, (int, float))}
    return sorted(names, key=lambda k: (k != "accuracy", len(k), k))


def summarize(spec: Spec, *, num_resamples: int = 10000) -> dict:
    """Everything the report shows, as one JSON-able dict (also what results.json holds)."""
    by_arm: dict[str, dict[int, dict]] = {arm: {} for arm in spec.arms}
    for run in spec.runs:
        result = load_result(run, current_only=True)  # a result from another budget never enters the report
        if result is not None:
            by_arm[run.arm][run.seed] = result
    all_results = [r for seeds in by_arm.values() for r in seeds.values()]
    metrics = metric_names(all_results)
    arms = {}
    for arm, seeds in by_arm.items():
        baseline = spec.arms[arm]["baseline"]
        base = by_arm.get(baseline, {})
        entry: dict = {"method": spec.arms[arm]["method"], "recipe": spec.arms[arm]["recipe"], "baseline": baseline,
                       "overrides": spec.arms[arm]["overrides"], "seeds": sorted(seeds),
                       "missing_seeds": [s for s in spec.seeds if s not in seeds], "metrics": {}, "vs_baseline": {}}
        for name in metrics:
            values = [r["eval"][name] for r in seeds.values() if isinstance(r["eval"].get(name), (int, float))]
            if values:
                entry["metrics"][name] = {**mean_ci(values), "values": values}
            if arm == baseline:
                continue
            mine = {s: r["eval"]["per_prompt"][name] for s, r in seeds.items()
                    if name in (r["eval"].get("per_prompt") or {})}
            theirs = {s: r["eval"]["per_prompt"][name] for s, r in base.items()
                      if name in (r["eval"].get("per_prompt") or {})}
            if set(mine) & set(theirs):
                boot = paired_bootstrap(mine, theirs, num_resamples=num_resamples)
                entry["vs_baseline"][name] = {**boot, "verdict": verdict(boot["lo"], boot["hi"])}
        for key in SPEED_KEYS:
            values = [r[key] for r in seeds.values() if isinstance(r.get(key), (int, float))]
            if values:
                entry[key] = sum(values) / len(values)
        entry["curves"] = {s: r.get("reward", {}) for s, r in seeds.items()}
        arms[arm] = entry
    timed = [r for r in all_results if isinstance(r.get("wall_seconds"), (int, float))]
    wall = sum(r["wall_seconds"] for r in timed)
    core = sum(r["wall_seconds"] * r.get("threads", 1) for r in timed)
    return {"name": spec.name, "spec": str(spec.file), "baseline": spec.baseline, "seeds": spec.seeds,
            "budget": spec.budget, "metrics": metrics, "arms": arms,
            "runs": {"planned": len(spec.runs), "finished": len(all_results)},
            "compute": {"run_wall_seconds": round(wall, 1), "thread_seconds": round(core, 1),
                        "untimed_runs": len(all_results) - len(timed),
                        "cpu_count": os.cpu_count(), "machine": platform.platform(),
                        "processor": platform.processor() or platform.machine()}}


def _interval(m: dict | None, digits: int = 3) -> str:
    if not m:
        return "-"
    if m.get("lo") is None:
        return f"{m['mean']:.{digits}f} (1 seed, no interval)"
    return f"{m['mean']:.{digits}f} [{m['lo']:.{digits}f}, {m['hi']:.{digits}f}]"


def _diff(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def markdown(summary: dict, images: list[str]) -> str:
    metrics, base = summary["metrics"], summary["baseline"]
    lines = [f"# Comparison: {summary['name']}", "",
             f"Spec: `{summary['spec']}`; seeds {summary['seeds']}; baseline arm `{base}` unless a row names another; "
             f"{summary['runs']['finished']} of {summary['runs']['planned']} runs finished.", "",
             f"Budget: `{json.dumps(summary['budget'])}`", "",
             "Each metric: mean over seeds [95% t-interval]. Difference: arm minus baseline, paired on the same eval "
             "prompts and seeds, [95% bootstrap interval over prompts x seeds]. A verdict says better or worse only "
             "when that interval excludes 0.", ""]
    head = ["Arm", "Method", "Seeds"] + metrics + ["Baseline"]
    for name in metrics:
        head += [f"{name} vs baseline", "Verdict"]
    head += ["Kept frac", "Weight mean", "s/step", "tokens/s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, e in summary["arms"].items():
        seeds = f"{len(e['seeds'])}" + (f" (missing {e['missing_seeds']})" if e["missing_seeds"] else "")
        row = [f"`{arm}`", e["method"], seeds] + [_interval(e["metrics"].get(m)) for m in metrics]
        row.append("(itself)" if arm == e["baseline"] else f"`{e['baseline']}`")
        for m in metrics:
            d = e["vs_baseline"].get(m)
            row += ["", ""] if arm == e["baseline"] else [_diff(d), d["verdict"] if d else "-"]
        row += [_num(e.get("kept_frac"), ".3f"), _num(e.get("weight_mean"), ".3f"), _num(e.get("step_time"), ".1f"),
                _num(e.get("tokens_per_s"), ".0f")]
        lines.append("| " + " | ".join(row) + " |")
    c = summary["compute"]
    untimed = f" ({c['untimed_runs']} runs untimed)" if c.get("untimed_runs") else ""
    lines += ["", f"Compute: {c['run_wall_seconds'] / 3600:.2f} h of run wall time in all{untimed} "
              f"({c['thread_seconds'] / 3600:.2f} thread-hours), on {c['cpu_count']} CPU cores ({c['processor']}, "
              f"{c['machine']}).", ""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in images]
    return "\n".join(lines) + "\n"


def plot(summary: dict, out_dir: Path) -> list[Path]:
    """reward_curves.png (mean over seeds, band = min..max over seeds) and speed.png (s/step, kept fraction)."""
    import matplotlib  # deferred: matplotlib is heavy and only plotting needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for arm, e in summary["arms"].items():
        by_step: dict[int, list[float]] = {}
        for curve in e["curves"].values():
            for step, value in zip(curve.get("steps", []), curve.get("values", [])):
                by_step.setdefault(step, []).append(value)
        steps = sorted(s for s, v in by_step.items() if len(v) == len(e["curves"]))
        if not steps:
            continue
        mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
        line, = ax.plot(steps, mean, label=f"{arm} ({len(e['curves'])} seeds)")
        ax.fill_between(steps, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps],
                        color=line.get_color(), alpha=0.15)
        drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("mean training reward")
        ax.set_title(f"{summary['name']}: reward per step (band: min..max over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "reward_curves.png")
        fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    arms = [a for a, e in summary["arms"].items() if e["seeds"]]
    if arms:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
        for ax, key, label in zip(axes, ("step_time", "tokens_per_s", "kept_frac"),
                                  ("seconds per step", "tokens per second", "kept fraction of tokens")):
            values = [summary["arms"][a].get(key) or 0.0 for a in arms]
            ax.bar(range(len(arms)), values)
            ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
            ax.set_title(label, fontsize=9)
        fig.suptitle(f"{summary['name']}: cost and kept fraction per arm (mean over seeds)", fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / "speed.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(spec: Spec, *, num_resamples: int = 10000) -> dict:
    """results.json, results.md and the PNGs in the comparison folder; returns the summary."""
    out = spec.output_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(spec, num_resamples=num_resamples)
    images = plot(summary, out)
    write_json_atomic(out / "results.json", summary)
    (out / "results.md.tmp").write_text(markdown(summary, [str(p) for p in images]))
    os.replace(out / "results.md.tmp", out / "results.md")
    return summary
