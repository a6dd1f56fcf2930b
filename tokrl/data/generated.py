"""Train/eval splits of distinct generated problems: what every seeded task shares."""

from __future__ import annotations

import random
from typing import Callable

from datasets import Dataset, DatasetDict


def distinct_splits(make_row: Callable[[random.Random], dict], key: str, num_train: int, num_eval: int,
                    seed: int) -> DatasetDict:
    """`num_eval` + `num_train` rows from `make_row(rng)` with distinct `row[key]`; the eval rows come first, so
    no eval problem is ever trained on and the eval split does not change when `num_train` does."""
    if num_train < 1 or num_eval < 0:
        raise ValueError("task.num_train must be >= 1 and task.num_eval >= 0")
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < num_train + num_eval:
        row = make_row(rng)
        if row[key] not in seen:
            seen.add(row[key])
            rows.append(row)
    evals = Dataset.from_list(rows[:num_eval]) if num_eval else Dataset.from_dict({k: [] for k in rows[0]})
    return DatasetDict(train=Dataset.from_list(rows[num_eval:]), eval=evals)
