"""Token selection for Token Cleaning: exact global top-k in bounded memory, per-sample top-k, random scores.

Global rule (Pang et al. 2025, official code `generate_token_label.py`): over the N response tokens of the set,
keep the first k = floor(rho * N) after a *stable* sort by score, descending. Equivalently: keep every score > tau
(tau = the k-th largest score), then the first (k - c_gt) tokens with score == tau in dataset order (row, then
position). Exactly k tokens are kept.

Streaming: scores are mapped to order-preserving uint32 keys. Pass 1 histograms the high 16 bits (65 536
counters), pass 2 the low 16 bits inside the one bucket that holds the k-th largest key, giving tau exactly plus
c_gt / c_eq. Memory is O(65 536) whatever N is. `-0.0` is folded into `+0.0` (equal as floats, different as keys)
and NaN is refused (a NaN score is a scorer bug, e.g. a padded position).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

_HALF = 1 << 16


def float_keys(scores: np.ndarray) -> np.ndarray:
    """Order-preserving map float32 -> uint32: a < b as floats iff key(a) < key(b)."""
    x = np.asarray(scores, dtype=np.float32)
    if np.isnan(x).any():
        raise ValueError("token scores contain NaN; a score is expected on every response token")
    x = x + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    bits = x.view(np.uint32)
    negative = (bits >> 31).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def key_to_float(key: int) -> float:
    key = np.uint32(key)
    bits = (key & np.uint32(0x7FFFFFFF)) if key >> np.uint32(31) else ~key
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


@dataclass
class Threshold:
    """Result of the global pass: keep `s > tau` plus the first `keep_ties` tokens with `s == tau`."""

    n: int  # scored response tokens
    k: int  # tokens kept, floor(ratio * n)
    tau_key: int | None  # uint32 key of the k-th largest score; None when k == 0
    tau: float | None
    c_gt: int  # scores strictly above tau
    c_eq: int  # scores equal to tau

    @property
    def keep_ties(self) -> int:
        return self.k - self.c_gt

    def to_dict(self) -> dict:
        return {**asdict(self), "keep_ties": self.keep_ties}


def keep_count(ratio: float, n: int) -> int:
    """k = floor(ratio * n), as the official code truncates `data_prop * N` to an int."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in [0, 1], got {ratio}")
    return int(math.floor(ratio * n))


def _kth_largest_bucket(hist: np.ndarray, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest item, items in strictly higher buckets); hist indexed by bucket."""
    from_top = np.cumsum(hist[::-1])
    pos = int(np.searchsorted(from_top, k))  # first position with cumulative count >= k
    bucket = len(hist) - 1 - pos
    return bucket, int(from_top[pos] - hist[bucket])


def streaming_threshold(score_batches: Callable[[], Iterable[np.ndarray]], ratio: float) -> Threshold:
    """Exact global threshold in two passes. `score_batches()` must yield, afresh on each call, 1-D arrays of
    the scores of response tokens only, in dataset order."""
    hist_hi = np.zeros(_HALF, dtype=np.int64)
    n = 0
    for scores in score_batches():
        keys = float_keys(scores)
        n += keys.size
        hist_hi += np.bincount(keys >> 16, minlength=_HALF)
    k = keep_count(ratio, n)
    if k == 0:
        return Threshold(n=n, k=0, tau_key=None, tau=None, c_gt=0, c_eq=0)
    hi, above = _kth_largest_bucket(hist_hi, k)
    hist_lo = np.zeros(_HALF, dtype=np.int64)
    for scores in score_batches():
        keys = float_keys(scores)
        inside = keys[(keys >> 16) == hi]
        hist_lo += np.bincount(inside & np.uint32(0xFFFF), minlength=_HALF)
    lo, above_lo = _kth_largest_bucket(hist_lo, k - above)
    tau_key = (hi << 16) | lo
    return Threshold(n=n, k=k, tau_key=int(tau_key), tau=key_to_float(tau_key), c_gt=above + above_lo,
                     c_eq=int(hist_lo[lo]))


def count_ties(scores: np.ndarray, mask: np.ndarray, threshold: Threshold) -> int:
    """Response tokens of one row whose score equals tau (for the tie quota of later rows)."""
    if threshold.tau_key is None:
        return 0
    mask = np.asarray(mask, dtype=bool)
    return int((float_keys(np.where(mask, scores, 0.0))[mask] == threshold.tau_key).sum())


class GlobalSelector:
    """Writes masks row by row in dataset order; `ties_before` lets a resumed shard start mid-way."""

    def __init__(self, threshold: Threshold, ties_before: int = 0):
        self.threshold = threshold
        self.ties_left = max(threshold.keep_ties - ties_before, 0) if threshold.tau_key is not None else 0

    def __call__(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        out = np.zeros(mask.shape, dtype=np.int8)
        if self.threshold.tau_key is None:
            return out
        keys = float_keys(np.where(mask, scores, 0.0))
        out[mask & (keys > self.threshold.tau_key)] = 1
        tie_positions = np.flatnonzero(mask & (keys == self.threshold.tau_key))
        take = tie_positions[: self.ties_left]
        out[take] = 1
        self.ties_left -= len(take)
        return out


def select_per_sample(scores: np.ndarray, mask: np.ndarray, ratio: float) -> np.ndarray:
    """Rho-1-style local ranking: keep the top floor(ratio * N_i) response tokens of this row (ties by position)."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.int8)
    positions = np.flatnonzero(mask)
    k = keep_count(ratio, len(positions))
    if k:
        keys = float_keys(np.asarray(scores, dtype=np.float32)[positions]).astype(np.int64)
        order = np.argsort(-keys, kind="stable")
        out[positions[order[:k]]] = 1
    return out


def random_scores(seed: int, row: int, length: int) -> np.ndarray:
    """Uniform pseudo-random scores for one row, a pure function of (seed, row): the Random baseline is the
    global rule applied to these, so it keeps exactly k tokens, streams, and resumes shard by shard."""
    return np.random.default_rng([int(seed), int(row)]).random(length, dtype=np.float32)

