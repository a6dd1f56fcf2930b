"""Intervals for comparisons: mean +- t-interval over seeds, a paired bootstrap over eval prompts x seeds, and the
plain-words verdict an interval supports. Pure Python (no scipy), so the report needs nothing beyond the core."""

from __future__ import annotations

import math
import random
from typing import Mapping, Sequence

NO_DIFFERENCE = "no difference detected at this budget"


def t_abs_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer df >= 1 (Abramowitz & Stegun 26.7.3 / 26.7.4, exact)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        total, term = 1.0, 1.0
        for k in range(1, (df - 1) // 2):  # terms 2/3 c^2, (2*4)/(3*5) c^4, ...
            term *= (2 * k) / (2 * k + 1) * c2
            total += term
        inner = s * math.cos(theta) * total if df > 1 else 0.0
        return 2.0 / math.pi * (theta + inner)
    total, term = 1.0, 1.0
    for k in range(1, df // 2):  # terms 1/2 c^2, (1*3)/(2*4) c^4, ...
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The two-sided critical value t* with P(|T| <= t*) = level (e.g. 12.706 for level 0.95, df 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    lo, hi = 0.0, 1.0
    while t_abs_cdf(hi, df) < level:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_abs_cdf(mid, df) < level else (lo, mid)
    return (lo + hi) / 2.0


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean and its t-interval over seeds: mean +- t*(level, n-1) * s / sqrt(n), s the sample std (n-1).

    One value gives an interval of None (no spread to measure), never a zero-width interval.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "lo": None, "hi": None, "n": 1, "std": None}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "std": std}


def paired_bootstrap(arm: Mapping, baseline: Mapping, *, num_resamples: int = 10000, level: float = 0.95,
                     seed: int = 0) -> dict:
    """Mean paired difference arm - baseline and its percentile bootstrap interval over eval prompts x seeds.

    `arm` and `baseline` map a seed to per-prompt scores on the same eval prompts (same order). Only seeds
    present in both are paired. Each resample draws the seeds with replacement and, independently, the prompts
    with replacement, and averages the differences over that grid, so both the seed spread and the prompt sample
    enter the interval. Seeded: the same inputs give the same interval.
    """
    seeds = sorted(set(arm) & set(baseline), key=str)
    if not seeds:
        raise ValueError("paired_bootstrap: no seed is present in both the arm and the baseline")
    diffs = []
    for s in seeds:
        a, b = list(arm[s]), list(baseline[s])
        if len(a) != len(b) or not a:
            raise ValueError(f"paired_bootstrap: seed {s} has {len(a)} arm and {len(b)} baseline prompt scores")
        diffs.append([float(x) - float(y) for x, y in zip(a, b)])
    num_prompts = len(diffs[0])
    if any(len(d) != num_prompts for d in diffs):
        raise ValueError("paired_bootstrap: every seed must score the same eval prompts")
    # the mean over a resampled grid only needs, per drawn seed, the sum over the drawn prompts
    rng = random.Random(seed)
    means = []
    for _ in range(num_resamples):
        ps = [rng.randrange(num_prompts) for _ in range(num_prompts)]
        ss = [rng.randrange(len(seeds)) for _ in range(len(seeds))]
        means.append(sum(sum(diffs[s][p] for p in ps) for s in ss) / (len(ss) * num_prompts))
    means.sort()
    alpha = (1.0 - level) / 2.0
    lo = means[min(len(means) - 1, max(0, math.floor(alpha * len(means))))]
    hi = means[min(len(means) - 1, max(0, math.ceil((1.0 - alpha) * len(means)) - 1))]
    estimate = sum(sum(d) for d in diffs) / (len(diffs) * num_prompts)
    return {"diff": estimate, "lo": lo, "hi": hi, "num_seeds": len(seeds), "num_prompts": num_prompts,
            "num_resamples": num_resamples}


def verdict(lo: float | None, hi: float | None, higher_is_better: bool = True) -> str:
    """'better' / 'worse' only when the whole interval is on one side of 0; otherwise no difference detected."""
    if lo is None or hi is None:
        return NO_DIFFERENCE
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return NO_DIFFERENCE
