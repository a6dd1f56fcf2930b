"""Run one contender of one case in this process and print its measurement as one JSON line."""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.memory import PeakMemory
from benchmarks.registry import load_cases

MARKER = "BENCH_RESULT "


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("case")
    parser.add_argument("contender")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    case = load_cases()[args.case]
    if args.contender not in case.contenders:
        raise SystemExit(f"case '{case.name}' has no contender '{args.contender}' (has {case.contenders})")
    run = case.load(args.contender, args.quick)
    memory = PeakMemory()
    memory.start()
    result = run()
    out = {
        "wall": result.wall,
        "cpu": result.cpu,
        "tokens": result.tokens,
        "peak_mib": memory.peak_mib(),
        "extra": result.extra,
    }
    print(MARKER + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
