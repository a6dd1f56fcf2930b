"""A small seeded preference set with weight columns, the example input of `tokrl dpo` (weights from data).

Each row is an addition with the right answer as `chosen` and a wrong one as `rejected`, plus
- `pair_weight`: how much the pair counts, here 1 for near misses (|wrong - right| <= 2) and 0.25 for far-off ones;
- `chosen_token_weights` / `rejected_token_weights`: 1 on the tokens that carry digits, 0.1 on the rest (the
  leading space, EOS), one value per completion token as TRL's DPOTrainer tokenises the pair;
- `token_columns_meta`: the tokenizer fingerprint, so a trainer with another tokenizer refuses the columns.
Your own data would carry weights from a reward model, a process reward model or a human label instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokrl.trainers.token_columns import completion_token_ids, token_columns_metadata


def weighted_pairs(tokenizer, num_pairs: int = 64, seed: int = 0, max_value: int = 20) -> list[dict]:
    rng = random.Random(seed)
    meta = token_columns_metadata(tokenizer)
    rows = []
    for _ in range(num_pairs):
        a, b = rng.randint(0, max_value), rng.randint(0, max_value)
        right = a + b
        wrong = right + rng.choice([-2, -1, 1, 2, 7, 10, -10])
        row = {"prompt": f"What is {a} + {b}? Reply with only the final number.", "chosen": f" {right}",
               "rejected": f" {wrong}", "pair_weight": 1.0 if abs(wrong - right) <= 2 else 0.25}
        for side, ids in completion_token_ids(tokenizer, row).items():
            pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
            row[f"{side}_token_weights"] = [1.0 if any(c.isdigit() for c in p) else 0.1 for p in pieces]
        row["token_columns_meta"] = meta
        rows.append(row)
    return rows


def write_weighted_pairs(path, tokenizer, num_pairs: int = 64, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in weighted_pairs(tokenizer, num_pairs, seed)))
    return path
