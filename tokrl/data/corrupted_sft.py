"""SFT data for the arithmetic task with a known set of corrupted completion tokens, so token cleaning is measurable.

A fraction of the pool's completions is corrupted in one of two ways, and the corrupted characters are recorded
as spans of the completion text (`corrupt_spans`):
- `wrong_digit`: one digit of the answer is replaced by another (a harmful label: it teaches a wrong answer);
- `filler`: a filler phrase is injected before or after the answer (uninformative tokens the prompt forbids).
After tokenisation, `corrupted_token_mask` turns the spans into a per-token 0/1 column aligned with `input_ids`,
and `removal_quality` scores a selection: precision/recall of *removing* corrupted response tokens.

A disjoint clean `trusted` split plays the paper's small high-quality warm-up set (the reference model is trained
on it), and `eval` is the task's eval split (no problem in it is ever trained on).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset, DatasetDict

from tokrl.data.arithmetic import ArithmeticTask

FILLERS = ("um", "uh", "hmm", "well", "like", "basically", "so yeah", "I guess", "okay so", "you know")
CORRUPTIONS = ("wrong_digit", "filler")


@dataclass
class CorruptedArithmeticSFT:
    """Pool (partly corrupted) + trusted (clean) + eval splits of prompt/completion SFT rows.

    `corrupt_fraction` of the pool rows are corrupted; `filler_share` of those get a filler, the rest a wrong
    digit. `task` holds `ArithmeticTask` fields (its `num_train` is replaced by `num_pool + num_trusted`).
    """

    num_pool: int = 1000
    num_trusted: int = 100
    corrupt_fraction: float = 0.4
    filler_share: float = 0.5
    seed: int = 0
    task: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= self.corrupt_fraction <= 1.0 or not 0.0 <= self.filler_share <= 1.0:
            raise ValueError("data.corrupt_fraction and data.filler_share must be in [0, 1]")
        if self.num_pool < 1 or self.num_trusted < 0:
            raise ValueError("data.num_pool must be >= 1 and data.num_trusted >= 0")
        known = set(ArithmeticTask.__dataclass_fields__) - {"num_train"}
        unknown = sorted(set(self.task) - known)
        if unknown:
            raise ValueError(f"data.task: unknown key(s) {unknown}; known: {sorted(known)}")

    def build(self) -> DatasetDict:
        task = ArithmeticTask(**{"seed": self.seed, **self.task, "num_train": self.num_pool + self.num_trusted})
        splits = task.build()
        rng = random.Random(self.seed + 7)
        trusted = [self._row(r, "none", rng) for r in splits["train"].select(range(self.num_trusted))]
        pool = []
        for r in splits["train"].select(range(self.num_trusted, self.num_trusted + self.num_pool)):
            kind = "none"
            if rng.random() < self.corrupt_fraction:
                kind = "filler" if rng.random() < self.filler_share else "wrong_digit"
            pool.append(self._row(r, kind, rng))
        return DatasetDict(
            pool=Dataset.from_list(pool),
            trusted=Dataset.from_list(trusted),
            eval=splits["eval"],
        )

    @staticmethod
    def _row(row: dict, kind: str, rng: random.Random) -> dict:
        text, spans = corrupt_answer(row["answer"], kind, rng)
        return {
            "prompt": row["prompt"],
            "completion": [{"role": "assistant", "content": text}],
            "question": row["question"],
            "answer": row["answer"],
            "corruption": kind,
            "corrupt_spans": spans,
        }


def corrupt_answer(answer: str, kind: str, rng: random.Random) -> tuple[str, list[list[int]]]:
    """(completion text, corrupted character spans [start, end)) for one answer."""
    if kind == "none":
        return answer, []
    if kind == "wrong_digit":
        digits = [i for i, c in enumerate(answer) if c.isdigit()]
        i = rng.choice(digits)
        wrong = rng.choice([d for d in "0123456789" if d != answer[i]])
        return answer[:i] + wrong + answer[i + 1 :], [[i, i + 1]]
    if kind == "filler":
        filler = rng.choice(FILLERS)
        if rng.random() < 0.5:
            text = f"{filler}, {answer}"
            return text, [[0, len(filler) + 2]]
        text = f"{answer}, {filler}"
        return text, [[len(answer), len(text)]]
    raise ValueError(f"unknown corruption {kind!r}; choose from {('none', *CORRUPTIONS)}")


def token_char_ends(tokenizer, ids: list[int]) -> list[int]:
    """Character end offset, in the decoded text of `ids`, of each token (by incremental decoding)."""
    return [len(tokenizer.decode(ids[: j + 1])) for j in range(len(ids))]


def corrupted_token_mask(tokenizer, input_ids: list[int], completion_mask: list[int], spans) -> list[int]:
    """Per-token 0/1 (aligned with `input_ids`): 1 on response tokens whose characters overlap a corrupted span.

    The response text starts with the completion content (chat templates append only end-of-turn tokens after
    it), so response token j covers characters [end_{j-1}, end_j) of the content.
    """
    out = [0] * len(input_ids)
    if not spans:
        return out
    start = next(i for i, m in enumerate(completion_mask) if m)
    ends = token_char_ends(tokenizer, list(input_ids[start:]))
    prev = 0
    for j, end in enumerate(ends):
        if end > prev and any(s < end and prev < e for s, e in spans):
            out[start + j] = 1
        prev = end
    return out


def removal_quality(token_mask_rows, completion_mask_rows, corrupted_rows) -> dict:
    """Precision/recall of removing corrupted response tokens, and the kept fraction of clean/corrupted tokens."""
    removed_bad = removed = bad = kept = total = kept_bad = 0
    for keep, resp, bad_row in zip(token_mask_rows, completion_mask_rows, corrupted_rows):
        keep, resp, bad_row = (np.asarray(x, dtype=bool) for x in (keep, resp, bad_row))
        drop = resp & ~keep
        removed += int(drop.sum())
        removed_bad += int((drop & bad_row).sum())
        bad += int((resp & bad_row).sum())
        kept += int((resp & keep).sum())
        kept_bad += int((resp & keep & bad_row).sum())
        total += int(resp.sum())
    clean = total - bad
    return {
        "response_tokens": total,
        "corrupted_tokens": bad,
        "corrupted_frac": bad / max(total, 1),
        "kept_frac": kept / max(total, 1),
        "removal_precision": removed_bad / max(removed, 1),
        "removal_recall": removed_bad / max(bad, 1),
        "kept_rate_clean": (kept - kept_bad) / max(clean, 1),
        "kept_rate_corrupted": kept_bad / max(bad, 1),
    }
