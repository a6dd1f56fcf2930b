"""Per-token data columns (weights, token rewards) carried through TRL's DPO data path into `[rows, L]` tensors.

The alignment contract (what an offline scoring pipeline must write)
--------------------------------------------------------------------
A per-token column holds one float per **completion token as TRL 1.16's `DPOTrainer` tokenises the example**, not
as the completion text would tokenise on its own. TRL (`DPOTrainer._prepare_dataset`, 1.16.0) does, per example:

1. if there is no `prompt` key: `trl.data_utils.extract_prompt` (longest common prefix of chosen/rejected turns);
2. plain text only: append `tokenizer.eos_token` to `chosen` and `rejected` unless they already end with it;
3. tokenise `prompt` (conversational: chat template with `add_generation_prompt=True`), `prompt + chosen` and
   `prompt + rejected` (conversational: the full conversation, no generation prompt), with the example's
   `tools` / `chat_template_kwargs`;
4. `prompt_len = min(common_prefix(prompt, prompt+chosen), common_prefix(prompt, prompt+rejected))`;
   `chosen_ids = (prompt+chosen)[prompt_len:]`, `rejected_ids = (prompt+rejected)[prompt_len:]`.

So the completion ids include the EOS (plain text) or the template's end-of-turn tokens (conversational), and
they may start with a token merged across the prompt/completion boundary. Pipelines must get the ids from
`completion_token_ids(tokenizer, example)` (which runs exactly those steps) and write one value per id:
`chosen_<name>` aligned with `ids["chosen"]` and `rejected_<name>` aligned with `ids["rejected"]`
(e.g. `chosen_token_weights` / `rejected_token_weights` for cDPO, `chosen_token_rewards` /
`rejected_token_rewards` for T-REG). Two lengths are accepted per row:

- the full completion length (the trainer truncates the column exactly as it truncates the ids), or
- the length kept after the trainer's truncation (`completion_token_ids(..., max_length=M, truncation_mode=...)`
  returns exactly the kept ids; use it to score only what the trainer will see).

Optional, checked by the trainer when present: per-row `chosen_token_ids` / `rejected_token_ids` (the ids the
values were computed for; must equal the trainer's full or kept ids) and a per-row JSON string column
`token_columns_meta` made with `token_columns_metadata(tokenizer, evaluator=..., template_hash=...)`; its
`tokenizer` fingerprint must match the trainer's tokenizer.

Truncation (`DataCollatorForPreference`, per sequence, on `prompt_ids + completion_ids`): `keep_start` keeps the
first `max_length` tokens, `keep_end` the last `max_length`. Positions outside the completion get 0. The
collated tensor is `[2B, L]` (chosen rows then rejected rows, right-padded like `input_ids`); TRL's per-token
log-probs are `[2B, L-1]` with index t holding token t+1, so `shift_to_logps` drops column 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pyarrow.compute as pc
import torch
from trl.data_utils import _tokenize, common_prefix_length, extract_prompt, is_conversational

SIDES = ("chosen", "rejected")
META_COLUMN = "token_columns_meta"
TRUNCATION_MODES = ("keep_start", "keep_end")


def side_column(side: str, name: str) -> str:
    """Dataset column of one side: `side_column("rejected", "token_weights") == "rejected_token_weights"`."""
    return f"{side}_{name}"


def ids_column(side: str) -> str:
    """Optional per-row column holding the completion ids the per-token values were computed for."""
    return f"{side}_token_ids"


# ---- tokenisation (mirrors TRL 1.16 DPOTrainer._prepare_dataset; pinned by tests against the trainer) -------------


def tokenize_continuations(tokenizer, example: dict[str, Any], sides, **template_kwargs):
    """(prompt ids, {side: ids of `prompt + example[side]`}) as TRL 1.16's DPO and SFT trainers tokenise them:
    conversational rows through the chat template (the prompt alone with the generation prompt; `template_kwargs`,
    then the row's `chat_template_kwargs`), plain text with `eos_token` appended unless it is already there."""
    prompt = example["prompt"]
    if is_conversational(example):
        kwargs = {**template_kwargs, **(example.get("chat_template_kwargs") or {})}
        prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True, **kwargs)["input_ids"]
        return prompt_ids, {s: _tokenize(tokenizer, prompt + example[s], **kwargs)["input_ids"] for s in sides}
    eos = tokenizer.eos_token
    texts = {s: example[s] if example[s].endswith(eos) else example[s] + eos for s in sides}
    prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
    return prompt_ids, {s: _tokenize(tokenizer, prompt + t)["input_ids"] for s, t in texts.items()}


def tokenize_preference(tokenizer, example: dict[str, Any]) -> dict[str, list[int]]:
    """`prompt_ids`, `chosen_ids`, `rejected_ids` exactly as TRL 1.16's DPOTrainer tokenises `example`."""
    example = dict(example)
    if "prompt" not in example:
        example.update(extract_prompt(example))
    tools = example.get("tools")
    prompt_ids, full = tokenize_continuations(tokenizer, example, SIDES,
                                              tools=json.loads(tools) if isinstance(tools, str) else tools)
    prompt_len = min(common_prefix_length(prompt_ids, full[s]) for s in SIDES)
    return {
        "prompt_ids": list(prompt_ids[:prompt_len]),
        "chosen_ids": list(full["chosen"][prompt_len:]),
        "rejected_ids": list(full["rejected"][prompt_len:]),
    }


def kept_span(prompt_len: int, completion_len: int, max_length: int | None, truncation_mode: str) -> slice:
    """Which completion tokens survive the collator's truncation of `prompt + completion` to `max_length`."""
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    if max_length is None or prompt_len + completion_len <= max_length:
        return slice(0, completion_len)
    if truncation_mode == "keep_start":
        return slice(0, max(0, max_length - prompt_len))
    return slice(max(0, completion_len - max_length), completion_len)


def completion_token_ids(
    tokenizer, example: dict[str, Any], max_length: int | None = None, truncation_mode: str = "keep_start"
) -> dict[str, list[int]]:
    """The completion ids a per-token column must align with: `{"chosen": [...], "rejected": [...]}`.

    Without `max_length`: the full completion ids (TRL's `chosen_ids` / `rejected_ids`). With the trainer's
    `max_length` and `truncation_mode`: only the ids the collator keeps. Either length is accepted by the trainer.
    """
    tok = tokenize_preference(tokenizer, example)
    out = {}
    for side in SIDES:
        ids = tok[f"{side}_ids"]
        out[side] = ids[kept_span(len(tok["prompt_ids"]), len(ids), max_length, truncation_mode)]
    return out


# ---- metadata -----------------------------------------------------------------------------------------------------


def end_positions(ids: list[int], end_ids: set[int]) -> int:
    """Index of the first trailing end-of-sequence token: the last occurrence of an end id (the tokens after it,
    e.g. the chat template's newline, are template too); len(ids) if there is none."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] in end_ids:
            return i
    return len(ids)


def end_token_ids(tokenizer) -> set[int]:
    """The ids that end a completion (the tokenizer's EOS)."""
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of what decides the token ids: vocabulary, special tokens and chat template."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    payload = {
        "vocab": sorted(tok.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tok.special_tokens_map.items())},
        "chat_template": getattr(tok, "chat_template", None),
        "class": type(tok).__name__.replace("Fast", ""),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def token_columns_metadata(tokenizer, **extra: Any) -> str:
    """The JSON string a pipeline writes in the `token_columns_meta` column (e.g. `evaluator=`, `template_hash=`)."""
    return json.dumps({"tokenizer": tokenizer_fingerprint(tokenizer), **extra}, sort_keys=True)


def read_metadata(dataset, column: str = META_COLUMN) -> dict[str, Any] | None:
    """The dataset's token-column metadata (one distinct value over all rows), or None if it has no such column."""
    if column not in dataset.column_names:
        return None
    values = set(dataset.unique(column))
    if len(values) != 1:
        raise ValueError(f"column '{column}': rows carry {len(values)} different metadata values, expected one")
    raw = values.pop()
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise ValueError(f"column '{column}': not a JSON object: {raw!r:.80}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"column '{column}': not a JSON object: {raw!r:.80}")
    return meta


def check_metadata(dataset, tokenizer, expected: dict[str, Any] | None = None, column: str = META_COLUMN) -> None:
    """Refuse a dataset scored with another tokenizer (or another evaluator/template, when `expected` names them)."""
    meta = read_metadata(dataset, column)
    if meta is None:
        return
    mine = tokenizer_fingerprint(tokenizer)
    if "tokenizer" in meta and meta["tokenizer"] != mine:
        raise ValueError(
            f"column '{column}': the per-token columns were computed with tokenizer {meta['tokenizer']}, but the "
            f"trainer's tokenizer is {mine}; rescore the dataset with the trainer's tokenizer"
        )
    for key, want in (expected or {}).items():
        if want is not None and key in meta and meta[key] != want:
            raise ValueError(f"column '{column}': {key} is {meta[key]!r}, but the trainer expects {want!r}")


# ---- length checks on a tokenised (TRL-prepared) dataset ----------------------------------------------------------


def _lengths(dataset, column: str) -> list[int]:
    table = dataset.with_format("arrow")[column]
    return pc.list_value_length(table).to_pylist()


def check_columns(
    dataset,
    names: Sequence[str],
    max_length: int | None,
    truncation_mode: str,
    dataset_name: str = "train",
) -> None:
    """Every `<side>_<name>` column exists and has, per row, the full or the kept completion length.

    `dataset` is TRL-prepared (has `prompt_ids`, `chosen_ids`, `rejected_ids`). Errors name the column and row.
    """
    if not names:
        return
    prompt_lens = _lengths(dataset, "prompt_ids")
    for side in SIDES:
        comp_lens = _lengths(dataset, f"{side}_ids")
        kept = [kept_span(p, c, max_length, truncation_mode) for p, c in zip(prompt_lens, comp_lens)]
        for name in names:
            column = side_column(side, name)
            if column not in dataset.column_names:
                raise KeyError(
                    f"{dataset_name} dataset has no column '{column}' (per-token column '{name}' needs "
                    f"'{side_column('chosen', name)}' and '{side_column('rejected', name)}')"
                )
            for row, (n, c, span) in enumerate(zip(_lengths(dataset, column), comp_lens, kept)):
                if n != c and n != span.stop - span.start:
                    raise ValueError(
                        f"column '{column}' row {row} ({dataset_name}): {n} values, but the trainer tokenised "
                        f"{c} completion tokens ({span.stop - span.start} kept after truncation); compute the column "
                        "with tokrl.trainers.token_columns.completion_token_ids"
                    )
        if ids_column(side) in dataset.column_names:
            stored = dataset[ids_column(side)]
            mine = dataset[f"{side}_ids"]
            for row, (a, b, span) in enumerate(zip(stored, mine, kept)):
                if list(a) != list(b) and list(a) != list(b[span]):
                    raise ValueError(
                        f"column '{ids_column(side)}' row {row} ({dataset_name}): the ids the per-token values were "
                        f"computed for differ from the trainer's {side} completion ids"
                    )


# ---- collation ----------------------------------------------------------------------------------------------------


def align_row(
    values: Sequence[float],
    prompt_len: int,
    completion_len: int,
    max_length: int | None,
    truncation_mode: str,
    where: str = "",
) -> list[float]:
    """One sequence row of `prompt + completion` after truncation: 0 on prompt positions, `values` on completion.

    `values` has the full completion length or the kept one (see the module docstring).
    """
    span = kept_span(prompt_len, completion_len, max_length, truncation_mode)
    kept = span.stop - span.start
    values = list(values)
    if len(values) == completion_len:
        values = values[span]
    elif len(values) != kept:
        raise ValueError(
            f"{where or 'per-token column'}: {len(values)} values for {completion_len} completion tokens "
            f"({kept} kept after truncation)"
        )
    row_len = prompt_len + completion_len if max_length is None else min(prompt_len + completion_len, max_length)
    return [0.0] * (row_len - kept) + [float(v) for v in values]


def pad_rows(rows: Sequence[Sequence[float]], width: int, value: float = 0.0) -> torch.Tensor:
    """Right-pad float rows to `width` (the collated `input_ids` width) -> `[rows, width]` float32."""
    out = torch.full((len(rows), width), float(value), dtype=torch.float32)
    for i, row in enumerate(rows):
        if len(row) > width:
            raise ValueError(f"per-token row {i} has {len(row)} values, longer than the batch width {width}")
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def shift_to_logps(column: torch.Tensor) -> torch.Tensor:
    """`[rows, L]` token-aligned -> `[rows, L-1]` aligned with TRL's log-probs (index t = token t+1)."""
    return column[:, 1:]


def collate_pair_column(
    examples: Sequence[dict[str, Any]],
    name: str,
    width: int,
    max_length: int | None,
    truncation_mode: str,
) -> torch.Tensor:
    """`[2B, width]` tensor of per-token column `name`: chosen rows then rejected rows, as TRL lays out the batch."""
    rows = []
    for side in SIDES:
        column = side_column(side, name)
        for i, ex in enumerate(examples):
            if column not in ex:
                raise KeyError(
                    f"the batch has no column '{column}': keep it in the dataset (tokrl's DPO trainers keep it "
                    "through remove_unused_columns)"
                )
            rows.append(
                align_row(
                    ex[column],
                    len(ex["prompt_ids"]),
                    len(ex[f"{side}_ids"]),
                    max_length,
                    truncation_mode,
                    where=f"column '{column}' batch row {i}",
                )
            )
    return pad_rows(rows, width)


BATCH_KEY_PREFIX = "tokrl_column."


class PairColumnCollator:
    """Wraps TRL's preference collator and adds `tokrl_column.<name>` `[2B, L]` tensors for each per-token column.

    The trainer must pop these keys before TRL splats the batch into the model (see `pop_columns`).
    """

    def __init__(self, inner, names: Sequence[str], max_length: int | None, truncation_mode: str):
        self.inner = inner
        self.names = tuple(names)
        self.max_length = max_length
        self.truncation_mode = truncation_mode

    def __call__(self, examples):
        batch = self.inner(examples)
        width = batch["input_ids"].shape[1]
        for name in self.names:
            batch[BATCH_KEY_PREFIX + name] = collate_pair_column(
                examples, name, width, self.max_length, self.truncation_mode
            )
        return batch


def pop_columns(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Remove the collated per-token columns from a batch (in place); returns `{name: [2B, L]}`."""
    keys = [k for k in inputs if isinstance(k, str) and k.startswith(BATCH_KEY_PREFIX)]
    return {k[len(BATCH_KEY_PREFIX) :]: inputs.pop(k) for k in keys}
