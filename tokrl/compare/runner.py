"""Run every arm x seed of a spec as its own subprocess (its own run dir), N at a time, resumably.

A run is finished when its `result.json` exists (written atomically after the method's own command exited 0 and
its outputs were read). A run found unfinished is resumed: `tokrl train` from its newest checkpoint, the offline
pipelines in place (their stages skip what is complete); an online run without a checkpoint restarts clean.
Children die with the harness (PR_SET_PDEATHSIG), so a SIGKILLed comparison leaves no orphan writing into a run
dir that the next invocation restarts.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from tokrl.compare.results import RESULT, collect, load_result, output_file, run_key
from tokrl.compare.spec import ONLINE, Run, Spec
from tokrl.diagnostics.metrics_log import read_metrics
from tokrl.pipelines.stage import CACHE_ENV
from tokrl.recipe import RecipeError
from tokrl.reports.plots import series
from tokrl.run_dir import last_checkpoint
from tokrl.utils import write_json_atomic

MARKER = "compare.json"

def log_path(run: Run) -> Path:
    """The run's console output, beside its run dir (`tokrl train` wants an empty or missing dir to start in)."""
    return run.run_dir.with_name(run.run_dir.name + ".log")

POLL_SECONDS = 2.0


def claim_output_dir(spec: Spec) -> None:
    """Create the comparison folder, or reuse one this command made; never write into someone else's folder."""
    out = spec.output_dir
    marker = out / MARKER
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise RecipeError(f"{out}: exists and is not a `tokrl compare` folder (no {MARKER}); choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json_atomic(marker, {"spec": str(spec.file), "name": spec.name})
    shutil.copyfile(spec.file, out / "spec.yaml")


def _die_with_parent() -> None:  # runs in the child before exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the child may outlive a SIGKILLed harness
        pass


def steps_done(run: Run) -> int:
    path = run.run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    try:
        return len(series(read_metrics(path), "loss")[0])
    except (ValueError, OSError):
        return 0


def prepare(run: Run) -> list[str]:
    """The argv to (re)start an unfinished run: resume where that is exact, else a clean run dir."""
    argv = list(run.argv)
    if run.family == ONLINE and run.run_dir.exists():
        ckpt = last_checkpoint(run.run_dir)
        if ckpt is None:
            shutil.rmtree(run.run_dir)
        else:
            argv.append(f"trainer.resume_from_checkpoint={ckpt.resolve()}")
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    return argv


class Progress:
    """One bar for the whole comparison, in training steps (a run without steps counts as one)."""

    def __init__(self, runs: list[Run], enabled: bool):
        self.units = {id(r): (r.max_steps or 1) for r in runs}
        self.bar = tqdm(total=sum(self.units.values()), unit="step", desc="compare", disable=not enabled,
                        dynamic_ncols=True)
        self.done: dict[int, int] = {}

    def update(self, run: Run, finished: bool = False) -> None:
        unit = self.units[id(run)]
        value = unit if finished else min(unit - 1, steps_done(run)) if run.max_steps else 0
        delta = value - self.done.get(id(run), 0)
        if delta > 0:
            self.done[id(run)] = value
            self.bar.update(delta)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.is_file() else []
    errors = [line for line in lines if line.startswith("tokrl: error")]
    return (errors or lines or ["(no output)"])[-1].strip()[:300]


def run_all(spec: Spec, *, jobs: int = 1, threads: int | None = None, progress: bool = True,
            arms: list[str] | None = None) -> dict:
    """Run the unfinished runs of `spec` (of `arms` only, when given: the arms that matter most first);
    returns {"finished": [...], "failed": [...], "skipped": [...]}."""
    unknown = [a for a in arms or () if a not in spec.arms]
    if unknown:
        raise RecipeError(f"--arms: '{unknown[0]}' is not an arm of {spec.file}; arms: {', '.join(spec.arms)}")
    claim_output_dir(spec)
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    selected = [run for run in spec.runs if not arms or run.arm in arms]
    pending, skipped = [], []
    for run in selected:
        done = load_result(run)
        if done is not None:
            if done.get("key") != run_key(run):
                raise RecipeError(f"{run.run_dir}: finished with a different command than the spec now gives; "
                                  f"use a new output_dir or delete that run dir")
            skipped.append(run)
        else:
            pending.append(run)
    bar = Progress(selected, progress)
    for run in skipped:
        bar.update(run, finished=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    if spec.share_stages:  # offline stages the runs have in common are computed once (tokrl.pipelines.stage)
        env[CACHE_ENV] = str((spec.output_dir / "stage_cache").resolve())
    running: dict[int, tuple[Run, subprocess.Popen, float]] = {}
    finished, failed = [], []

    def finish(run: Run, wall: float | None) -> None:
        result = collect(run, wall, threads)
        result["key"] = run_key(run)
        write_json_atomic(run.run_dir / RESULT, result)
        finished.append(run)
        bar.update(run, finished=True)

    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                run = pending.pop(0)
                if output_file(run).is_file():  # the command finished but its result was not recorded yet
                    finish(run, None)  # its wall time was not measured
                    continue
                argv = prepare(run)
                log = open(log_path(run), "ab")
                proc = subprocess.Popen([sys.executable, "-m", "tokrl", *argv], stdout=log, stderr=subprocess.STDOUT,
                                        env=env, preexec_fn=_die_with_parent)
                log.close()
                running[proc.pid] = (run, proc, time.time())
            time.sleep(POLL_SECONDS)
            for pid, (run, proc, start) in list(running.items()):
                if proc.poll() is None:
                    bar.update(run)
                    continue
                del running[pid]
                if proc.returncode == 0 and output_file(run).is_file():
                    finish(run, time.time() - start)
                else:
                    failed.append(run)
                    bar.write(f"[compare] {run.arm} seed {run.seed} failed (exit {proc.returncode}): "
                              f"{_last_line(log_path(run))}; log: {log_path(run)}")
    finally:
        for run, proc, _ in running.values():  # interrupted: stop the children, their runs stay unfinished
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        bar.close()
    return {"finished": finished, "failed": failed, "skipped": skipped, "threads": threads, "jobs": jobs}
