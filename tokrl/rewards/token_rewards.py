"""Reward functions that score tokens: their outputs, turned into `[B, T]` reward tensors.

A GRPO reward function returns one entry per completion. tokrl accepts, for each completion:

- a number (or None): a sequence reward, TRL's own contract;
- a list of numbers, one per completion token (aligned with `completion_ids[i]` as the function received it);
- a list of `((char_start, char_end), reward)` pairs: rewards for spans of the completion text, e.g. a process
  reward model scoring the steps of a solution. Offsets index the completion text the function received (for
  conversational prompts, the assistant message's content), end exclusive.

One function returns either sequence rewards or token rewards (None is allowed in both). Spans become token
positions through the tokenizer: token k covers the characters `[end(k-1), end(k))` of the decoded completion,
where `end(k) = len(decode(ids[:k+1]))` (the sampled ids decoded as TRL decodes them, rather than re-encoding the
text, whose tokens may differ from the sampled ones). A span's reward goes to the span's last token
(`placement="last"`, the step-end token of process supervision) or to every token it overlaps (`"all"`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

PLACEMENTS = ("last", "all")


def is_number(x) -> bool:
    return isinstance(x, numbers.Real)


def is_token_output(entries: Sequence, name: str) -> bool:
    """True when a reward function's output holds per-token entries (lists), False for sequence rewards."""
    kinds = {"token" if isinstance(e, (list, tuple)) else "sequence" for e in entries if e is not None}
    if len(kinds) > 1:
        raise ValueError(
            f"reward function '{name}' returned numbers for some completions and lists for others; return one "
            "kind (a number per completion, or a list of per-token rewards / ((start, end), reward) spans)"
        )
    return kinds == {"token"}


def is_span_list(entry: Sequence) -> bool:
    return len(entry) > 0 and all(isinstance(e, (list, tuple)) and len(e) == 2 for e in entry)


def token_char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """`ends[k]`: characters of the decoded completion up to and including token k (special tokens decode to "")."""
    if not len(ids):
        return []
    prefixes = tokenizer.batch_decode([list(ids[: k + 1]) for k in range(len(ids))], skip_special_tokens=True)
    ends, top = [], 0
    for text in prefixes:
        top = max(top, len(text))  # a prefix ending inside a multi-byte character may decode shorter
        ends.append(top)
    return ends


def spans_to_tokens(spans, char_ends: Sequence[int], placement: str, where: str) -> tuple[list[float], list[bool]]:
    """Per-token rewards and a rewarded-position mask from `((start, end), reward)` spans."""
    if placement not in PLACEMENTS:
        raise ValueError(f"span placement must be one of {PLACEMENTS}, got {placement!r}")
    n = len(char_ends)
    values, rewarded = [0.0] * n, [False] * n
    text_len = char_ends[-1] if n else 0
    for span in spans:
        (start, end), reward = span
        if not (0 <= start < end <= text_len):
            raise ValueError(f"{where}: span ({start}, {end}) is outside the completion text (0..{text_len}) or empty")
        hit = [k for k in range(n) if (char_ends[k - 1] if k else 0) < end and char_ends[k] > start]
        targets = hit[-1:] if placement == "last" else hit
        for k in targets:
            values[k] += float(reward)
            rewarded[k] = True
    return values, rewarded


def entry_to_tokens(entry, ids: Sequence[int], tokenizer, placement: str, where: str):
    """One completion's entry (None, per-token list, or spans) -> (values, rewarded), each of length `len(ids)`."""
    n = len(ids)
    if entry is None or len(entry) == 0:
        return [0.0] * n, [False] * n
    if is_span_list(entry):
        return spans_to_tokens(entry, token_char_ends(tokenizer, ids), placement, where)
    if not all(is_number(v) for v in entry):
        raise ValueError(f"{where}: expected numbers (one per token) or ((start, end), reward) pairs, got {entry!r:.80}")
    if len(entry) != n:
        raise ValueError(f"{where}: {len(entry)} token rewards for a completion of {n} tokens")
    return [float(v) for v in entry], [True] * n


def token_reward_tensors(
    outputs: Sequence[tuple[float, Sequence]],
    completion_ids: Sequence[Sequence[int]],
    width: int,
    tokenizer,
    placement: str,
    names: Sequence[str] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of weighted token rewards `[B, width]` and the mask of rewarded positions `[B, width]`.

    `outputs` holds `(weight, entries)` per token-reward function, entries one per completion.
    """
    rewards = torch.zeros(len(completion_ids), width)
    rewarded = torch.zeros(len(completion_ids), width, dtype=torch.bool)
    for f, (weight, entries) in enumerate(outputs):
        name = names[f] if f < len(names) else str(f)
        for i, (entry, ids) in enumerate(zip(entries, completion_ids, strict=True)):
            values, mask = entry_to_tokens(entry, ids, tokenizer, placement, f"reward function '{name}' completion {i}")
            n = min(len(values), width)
            rewards[i, :n] += weight * torch.tensor(values[:n])
            rewarded[i, :n] |= torch.tensor(mask[:n], dtype=torch.bool)
    return rewards, rewarded


def sequence_summary(entry) -> float | None:
    """The number TRL logs for a per-token entry: the sum of its token (or span) rewards."""
    if entry is None:
        return None
    if is_span_list(entry):
        return float(sum(r for _, r in entry))
    return float(sum(entry))
