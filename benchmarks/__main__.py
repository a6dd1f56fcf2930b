"""`python -m benchmarks`: run every registered case, each contender in its own process, alternating contenders.

For each repeat the contenders of a case run one after another (the order rotates from repeat to repeat), each in
a fresh subprocess (`python -m benchmarks.worker CASE CONTENDER`), so one contender's allocations cannot inflate
another's peak memory and slow drift of the machine's load hits all contenders alike. The table reports medians
over the repeats and the target ratios with PASS/MISS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.registry import Case, load_cases
from benchmarks.worker import MARKER

ROOT = Path(__file__).resolve().parent.parent


def run_worker(case: str, contender: str, quick: bool, env: dict, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.worker", case, contender] + (["--quick"] if quick else [])
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def summarise(case: Case, runs: dict[str, list[dict]], clock: str) -> dict:
    out = {}
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            out[name] = {"error": results[-1]["error"] if results else "not run"}
            continue
        time_s = statistics.median(r[clock] for r in ok)
        tokens = ok[0].get("tokens")
        out[name] = {
            "time": time_s,
            "wall": statistics.median(r["wall"] for r in ok),
            "cpu": statistics.median(r["cpu"] for r in ok),
            "memory": statistics.median(r["peak_mib"] for r in ok),
            "throughput": (tokens / time_s) if tokens else None,
            "repeats": len(ok),
            "all_time": [round(r[clock], 3) for r in ok],
            "all_memory": [round(r["peak_mib"], 1) for r in ok],
            "forwards": ok[0].get("extra", {}).get("forwards_per_step"),
        }
    targets = []
    for t in case.targets:
        a, b = out.get(t.numerator, {}), out.get(t.denominator, {})
        if a.get(t.metric) is None or b.get(t.metric) is None or b[t.metric] == 0:
            targets.append({"label": t.label, "ratio": None, "bound": t.describe(), "status": "n/a"})
            continue
        ratio = a[t.metric] / b[t.metric]
        targets.append(
            {"label": t.label, "ratio": ratio, "bound": t.describe(), "status": "PASS" if t.check(ratio) else "MISS"}
        )
    return {"contenders": out, "targets": targets}


def markdown(case: Case, summary: dict, clock: str, runs: dict[str, list[dict]]) -> str:
    lines = [f"### {case.name}: {case.description}", ""]
    lines += [
        f"| contender | time/unit ({clock}, s) | wall s | CPU s | peak MiB | tokens/s | runs: time s | runs: MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summary["contenders"].items():
        if "error" in s:
            lines.append(f"| {name} | error: {s['error'][:120]} | | | | | | |")
            continue
        tps = f"{s['throughput']:.0f}" if s["throughput"] else ""
        lines.append(
            f"| {name} | {s['time']:.3f} | {s['wall']:.3f} | {s['cpu']:.3f} | {s['memory']:.0f} | {tps} | "
            f"{s['all_time']} | {s['all_memory']} |"
        )
    forwards = {n: s.get("forwards") for n, s in summary["contenders"].items() if s.get("forwards")}
    if forwards:
        lines += ["", "backbone forwards per step (train = with grad, score = no-grad log-prob passes, generate):"]
        lines += [f"- {n}: " + ", ".join(f"{k} {v:g}" for k, v in f.items()) for n, f in forwards.items()]
    if summary["targets"]:
        lines += ["", "| target | ratio | bound | result |", "| --- | --- | --- | --- |"]
        for t in summary["targets"]:
            ratio = "" if t["ratio"] is None else f"{t['ratio']:.3f}"
            lines.append(f"| {t['label']} | {ratio} | {t['bound']} | {t['status']} |")
    if case.details is not None:
        lines += ["", case.details(runs)]
    return "\n".join(lines)


def machine() -> dict:
    import torch
    import transformers
    import trl

    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (minutes, for a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (median reported; >= 3)")
    parser.add_argument("--cases", nargs="*", help="case names to run (default: every case not marked opt-in)")
    parser.add_argument("--contenders", nargs="*", help="run only these contenders of the named cases")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the workers")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=None,
        help="time used for ratios: 'cpu' (process CPU time, default on CPU) or 'wall' (default on GPU)",
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds per worker")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--list", action="store_true", help="list the registered cases and exit")
    args = parser.parse_args(argv)

    import torch

    registry = load_cases()
    if args.list:
        for case in registry.values():
            optin = "" if case.default else " (opt-in)"
            print(f"{case.name}{optin}: {case.description} [{', '.join(case.contenders)}]")
        return 0
    names = args.cases or [name for name, case in registry.items() if case.default]
    unknown = [n for n in names if n not in registry]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; registered: {list(registry)}")
    clock = args.clock or ("wall" if torch.cuda.is_available() else "cpu")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)

    info = machine()
    info.update(
        command="python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        omp_num_threads=env.get("OMP_NUM_THREADS"),
        clock=clock,
        load_before=os.getloadavg(),
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    print(json.dumps(info), flush=True)
    report = {"machine": info, "cases": {}}
    sections = []
    for name in names:
        case = registry[name]
        contenders = [c for c in case.contenders if not args.contenders or c in args.contenders]
        runs: dict[str, list[dict]] = {c: [] for c in contenders}
        for r in range(args.repeats):
            k = r % len(contenders)
            for contender in contenders[k:] + contenders[:k]:
                result = run_worker(name, contender, args.quick, env, args.timeout)
                runs[contender].append(result)
                shown = result.get("error") or f"{clock} {result[clock]:.3f}s, peak {result['peak_mib']:.0f} MiB"
                print(f"[{name}] repeat {r + 1}/{args.repeats} {contender}: {shown}", flush=True)
        summary = summarise(case, runs, clock)
        report["cases"][name] = {"runs": runs, **summary}
        sections.append(markdown(case, summary, clock, runs))
        print("\n" + sections[-1] + "\n", flush=True)
    info["load_after"] = os.getloadavg()
    info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = "\n\n".join(sections)
    print(f"load average before {info['load_before']}, after {info['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
