"""Token Cleaning selection rules: hand examples from the spec, and the streaming threshold vs an in-memory oracle.

The oracle is written here from the official rule (UCSC-REAL/TokenCleaning `generate_token_label.py`): list the
response tokens (row, position) in dataset order, Python's stable `sorted(..., reverse=True)` by score, keep the
first int(len * rho).
"""

import numpy as np
import pytest
from datasets import Dataset

from tokrl.pipelines.token_cleaning import select_stage
from tokrl.pipelines.token_cleaning_select import (
    GlobalSelector,
    count_ties,
    float_keys,
    select_per_sample,
    streaming_threshold,
)


def oracle_global(rows, masks, ratio):
    tokens = [(float(s[j]), i, j) for i, (s, m) in enumerate(zip(rows, masks)) for j in range(len(s)) if m[j]]
    keep = sorted(tokens, key=lambda t: t[0], reverse=True)[: int(len(tokens) * ratio)]
    out = [np.zeros(len(s), dtype=np.int8) for s in rows]
    for _, i, j in keep:
        out[i][j] = 1
    return out


def oracle_per_sample(scores, mask, ratio):
    tokens = [(float(scores[j]), j) for j in range(len(scores)) if mask[j]]
    keep = sorted(tokens, key=lambda t: t[0], reverse=True)[: int(len(tokens) * ratio)]
    out = np.zeros(len(scores), dtype=np.int8)
    for _, j in keep:
        out[j] = 1
    return out


def streaming_masks(rows, masks, ratio, chunk=3):
    def batches():
        for lo in range(0, len(rows), chunk):
            yield np.concatenate([np.asarray(s, np.float32)[np.asarray(m, bool)] for s, m in
                                  zip(rows[lo:lo + chunk], masks[lo:lo + chunk])] or [np.zeros(0, np.float32)])

    threshold = streaming_threshold(batches, ratio)
    selector = GlobalSelector(threshold)
    return threshold, [selector(np.asarray(s, np.float32), m) for s, m in zip(rows, masks)]


def with_prompt(scores):
    """Prepend two prompt positions (mask 0) with scores that would win if they were ranked."""
    return [9.0, 9.0, *scores], [0, 0, *[1] * len(scores)]


def test_spec_example_global_vs_per_sample():
    (a, ma), (b, mb) = with_prompt([0.9, 0.1, 0.5]), with_prompt([0.8, 0.2])
    threshold, masks = streaming_masks([a, b], [ma, mb], 0.6)
    assert (threshold.n, threshold.k) == (5, 3)
    assert masks[0].tolist() == [0, 0, 1, 0, 1] and masks[1].tolist() == [0, 0, 1, 0]
    assert select_per_sample(np.float32(a), ma, 0.6).tolist() == [0, 0, 1, 0, 0]  # floor(1.8) = 1
    assert select_per_sample(np.float32(b), mb, 0.6).tolist() == [0, 0, 1, 0]  # floor(1.2) = 1
    assert select_per_sample(np.float32([5.0, 1.0]), [0, 1], 0.6).tolist() == [0, 0]  # N_i = 1 keeps nothing


def test_spec_example_floor_and_ties_in_dataset_order():
    (a, ma), (b, mb) = with_prompt([0.5, 0.9, 0.1]), with_prompt([0.8, 0.5, 0.7, 0.5])
    threshold, masks = streaming_masks([a, b], [ma, mb], 0.6)
    assert threshold.k == 4 and threshold.c_gt == 3 and threshold.c_eq == 3 and threshold.tau == 0.5
    assert masks[0].tolist() == [0, 0, 1, 1, 0] and masks[1].tolist() == [0, 0, 1, 0, 1, 0]


def test_keys_order_and_signed_zero():
    x = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], dtype=np.float32)
    keys = float_keys(x)
    assert (np.diff(keys.astype(np.int64)) >= 0).all()
    assert keys[3] == keys[4]  # -0.0 == +0.0
    with pytest.raises(ValueError, match="NaN"):
        float_keys(np.array([1.0, np.nan], dtype=np.float32))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ratio", [0.0, 0.13, 0.6, 1.0])
def test_streaming_threshold_equals_in_memory_selection(seed, ratio):
    rng = np.random.default_rng(seed)
    rows, masks = [], []
    for _ in range(int(rng.integers(5, 30))):
        n = int(rng.integers(1, 12))
        # few distinct values (many ties), negatives, +-0, very large and very small magnitudes
        values = rng.choice(np.float32([-2.5, -1.0, -0.0, 0.0, 0.25, 0.25, 1.5, 3e-38, -7e30, 7e30]), size=n)
        values = np.where(rng.random(n) < 0.3, rng.normal(size=n).astype(np.float32), values).astype(np.float32)
        mask = (rng.random(n) < 0.8).astype(np.int8)
        rows.append(values)
        masks.append(mask)
    expected = oracle_global(rows, masks, ratio)
    for chunk in (1, 4, 1000):
        threshold, got = streaming_masks(rows, masks, ratio, chunk=chunk)
        assert [g.tolist() for g in got] == [e.tolist() for e in expected]
        assert sum(int(g.sum()) for g in got) == threshold.k == int(threshold.n * ratio)
        flat = np.concatenate([r[m.astype(bool)] for r, m in zip(rows, masks)])
        if threshold.k:
            assert threshold.tau == np.sort(flat)[::-1][threshold.k - 1] + np.float32(0.0)
            assert threshold.c_gt == int((flat > threshold.tau).sum())
            assert threshold.c_eq == int((flat == threshold.tau).sum())
    for r, m in zip(rows, masks):
        assert select_per_sample(r, m, ratio).tolist() == oracle_per_sample(r, m, ratio).tolist()


def test_select_stage_on_disk_resumes_tie_quota_across_shards(tmp_path):
    # Every score ties: the quota must go to the earliest rows even though shards are written separately.
    n_rows, length = 7, 4
    tokens = Dataset.from_dict({"input_ids": [[1] * length] * n_rows, "completion_mask": [[0, 1, 1, 1]] * n_rows})
    logps = Dataset.from_dict({"logps": [[0.0, -1.0, -1.0, -1.0]] * n_rows})
    selected = select_stage(tokens, logps, logps, tmp_path / "sel", keep_ratio=0.5, shard_size=2)
    kept = [sum(m) for m in selected["token_mask"]]
    assert sum(kept) == int(0.5 * 21) == 10
    assert kept == [3, 3, 3, 1, 0, 0, 0]
    assert selected["token_scores"][0] == [0.0, 0.0, 0.0, 0.0]
    th = streaming_threshold(lambda: iter([np.zeros(21, np.float32)]), 0.5)
    assert count_ties(np.zeros(4, np.float32), np.array([0, 1, 1, 1]), th) == 3
