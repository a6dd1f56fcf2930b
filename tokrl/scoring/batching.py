"""Length-bucketed batches of (prompt, completion) examples, padded only within a bucket."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class Batch:
    """One padded bucket. `target_mask[b, t]` is True where `input_ids[b, t]` is a completion token to score."""

    indices: list[int]  # positions of these rows in the caller's example list
    input_ids: torch.Tensor  # [B, L], right-padded
    attention_mask: torch.Tensor  # [B, L]
    target_mask: torch.Tensor  # [B, L] bool
    completion_lengths: list[int]


def check_examples(examples: Sequence[dict]) -> None:
    """Fail with a one-line error naming the example and the key when an example cannot be scored."""
    for i, example in enumerate(examples):
        for key in ("prompt_ids", "completion_ids"):
            if key not in example:
                raise ValueError(f"example {i}: missing key '{key}' (expected 'prompt_ids' and 'completion_ids')")
            ids = example[key]
            if isinstance(ids, torch.Tensor):
                ids = ids.tolist()
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise ValueError(f"example {i}: '{key}' must be a list of int token ids")
        if len(example["prompt_ids"]) == 0:
            raise ValueError(
                f"example {i}: 'prompt_ids' is empty; the first completion token needs a context (prepend BOS)"
            )


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped `batch_size` at a time after sorting by length (longest first), so padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def make_batch(examples: Sequence[dict], indices: list[int], device, pad_id: int = 0) -> Batch:
    """Right-pad `prompt + completion` rows of one bucket; padding is masked out of attention and scoring."""
    rows = [list(examples[i]["prompt_ids"]) + list(examples[i]["completion_ids"]) for i in indices]
    prompt_lengths = [len(examples[i]["prompt_ids"]) for i in indices]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    target_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, p) in enumerate(zip(rows, prompt_lengths)):
        input_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, : len(row)] = 1
        target_mask[b, p : len(row)] = True
    return Batch(
        indices=list(indices),
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        target_mask=target_mask.to(device),
        completion_lengths=[len(r) - p for r, p in zip(rows, prompt_lengths)],
    )


def iter_batches(examples: Sequence[dict], batch_size: int, device, progress: bool = False, desc: str = "scoring"):
    """Yield `Batch`es over `examples` in length-bucketed order (with a tqdm bar if `progress`)."""
    check_examples(examples)
    lengths = [len(e["prompt_ids"]) + len(e["completion_ids"]) for e in examples]
    buckets = length_buckets(lengths, batch_size)
    if progress:
        buckets = tqdm(buckets, desc=desc, unit="batch")
    for indices in buckets:
        yield make_batch(examples, indices, device)
