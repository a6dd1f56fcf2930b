"""Tokenise SFT rows exactly as TRL 1.16's `SFTTrainer` does, once, so scoring and training share token boundaries.

TRL's prompt-completion path (`SFTTrainer._prepare_dataset.tokenize_fn`): conversational rows are rendered with
the chat template, the prompt alone with `add_generation_prompt=True`, and the completion starts where the two
token sequences diverge (`common_prefix_length`); plain-text rows get `eos_token` appended to the completion
first. We call the same TRL helpers (`trl.data_utils._tokenize`, `common_prefix_length`) and a test pins the
result against `SFTTrainer`'s own prepared dataset.

`messages` rows (TRL's conversational language-modelling format) are split at their last assistant turn into
prompt = earlier turns, completion = that turn: token cleaning scores response tokens only, and TRL would train
a `messages` row on every token unless `assistant_only_loss` is set with a `{% generation %}` template.

Truncation is done here (keep_start / keep_end, like TRL), on `input_ids` and every per-token column together:
TRL's own truncation cuts only `input_ids` and `labels` and would silently misalign a `token_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence

from trl.data_utils import common_prefix_length

from tokrl.trainers.token_columns import tokenize_continuations


def _at(row: int | None) -> str:
    """The error prefix naming the row, when there is one."""
    return f"row {row}: " if row is not None else ""


def split_messages(messages: list[dict], row: int | None = None) -> tuple[list[dict], list[dict]]:
    """(prompt, completion) of a `messages` conversation: the completion is its last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None or last == 0:
        raise ValueError(f"{_at(row)}column 'messages' needs an assistant turn after at least one other turn")
    return messages[:last], [messages[last]]


def tokenize_sft_row(example: dict, tokenizer, chat_template: str | None = None, row: int | None = None) -> dict:
    """`{"input_ids", "completion_mask"}` for one prompt-completion (or `messages`) row, as TRL's SFTTrainer
    builds them (before truncation)."""
    if "messages" in example and "prompt" not in example:
        prompt, completion = split_messages(example["messages"], row)
        example = {**example, "prompt": prompt, "completion": completion}
    if "prompt" not in example or "completion" not in example:
        raise ValueError(f"{_at(row)}an SFT row needs 'prompt' and 'completion' columns (or 'messages')")
    prompt_ids, full = tokenize_continuations(tokenizer, example, ("completion",), chat_template=chat_template,
                                              tools=example.get("tools"))
    ids = full["completion"]
    prompt_len = common_prefix_length(prompt_ids, ids)
    if prompt_len == 0:
        raise ValueError(f"{_at(row)}empty prompt after tokenisation; the first response token needs a context")
    return {"input_ids": list(ids), "completion_mask": [0] * prompt_len + [1] * (len(ids) - prompt_len)}


def truncation_slice(max_length: int | None, mode: str = "keep_start") -> slice:
    if max_length is None:
        return slice(None)
    if mode == "keep_start":
        return slice(None, max_length)
    if mode == "keep_end":
        return slice(-max_length, None)
    raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {mode!r}")


def check_token_columns(example: dict, columns: Sequence[str], row: int, reference: str = "input_ids") -> None:
    """Every per-token column must be as long as `input_ids`; the error names the column and the row."""
    length = len(example[reference])
    for column in columns:
        if column not in example:
            raise KeyError(f"row {row}: per-token column '{column}' is missing (columns: {sorted(example)})")
        if len(example[column]) != length:
            raise ValueError(
                f"row {row}: per-token column '{column}' has {len(example[column])} values but '{reference}' has "
                f"{length} tokens; it was not produced with this tokenisation (re-run `tokrl train RECIPE` on this data)"
            )


def completion_span(completion_mask: Sequence[int], row: int | None = None) -> int:
    """Index of the first response token; the response must be one contiguous tail (prompt-completion rows)."""
    n = len(completion_mask)
    start = next((i for i, m in enumerate(completion_mask) if m), n)
    if any(not m for m in completion_mask[start:]):
        raise ValueError(f"{_at(row)}'completion_mask' is not a contiguous tail; cannot split prompt and completion")
    return start
