"""A small registry of benchmark cases. Add one by dropping a module in `benchmarks/cases/` that calls `register`.

A case names its contenders and, for each, a `load(contender, quick)` that builds everything (model, trainer,
data) and returns a zero-argument `run()`. The runner measures peak memory from the moment `load` returns, so
model loading is never counted; `run()` returns the seconds of one unit of work (its own timing, so warm-up steps
can be left out) and optionally how many tokens that unit processed. Both clocks are kept: wall time, and this
process's CPU time (user + system), which is steadier on a machine shared with other jobs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Result:
    wall: float  # wall seconds of one unit of work (median of the unit's own inner repeats, if any)
    cpu: float  # process CPU seconds (user + system) of the same unit
    tokens: int | None = None  # tokens processed by that unit, for tokens/s
    extra: dict = field(default_factory=dict)


@dataclass
class Target:
    """A ratio `metric(numerator) / metric(denominator)` that must be `<= bound` (or `>=` when `at_least`).

    `metric`: "time" (seconds per unit, on the clock the run uses), "memory" (peak MiB above the post-load
    baseline) or "throughput" (tokens per second).
    """

    label: str
    metric: str
    numerator: str
    denominator: str
    bound: float
    at_least: bool = False

    def check(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:g}"


@dataclass
class Case:
    name: str
    description: str
    contenders: list[str]
    load: Callable[[str, bool], Callable[[], Result]]  # (contender, quick) -> run
    targets: list[Target] = field(default_factory=list)
    notes: str = ""
    default: bool = True  # False: run only when named with --cases (ablations, slow cases)
    details: Callable[[dict[str, list[dict]]], str] | None = None  # extra markdown from all runs (e.g. a profile)


CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    if case.name in CASES:
        raise ValueError(f"benchmark case '{case.name}' is registered twice")
    CASES[case.name] = case
    return case


def load_cases() -> dict[str, Case]:
    """Import every module under `benchmarks.cases` (each registers its cases) and return the registry."""
    from benchmarks import cases

    for info in sorted(pkgutil.iter_modules(cases.__path__), key=lambda i: i.name):
        importlib.import_module(f"benchmarks.cases.{info.name}")
    return CASES
