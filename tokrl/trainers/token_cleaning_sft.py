"""`TokenCleaningSFTTrainer`: TRL's SFTTrainer whose loss counts only the tokens an offline weighter selects.

How the weights enter (TRL 1.16, public API only):
1. Dataset prep (ours, before TRL's): rows are pre-tokenised (`input_ids`, `completion_mask`, the weighter's
   per-token columns, e.g. `token_mask` from `tokrl clean`); every per-token column is truncated together, and
   `labels` = `input_ids` where the weighter's weight is non-zero, else -100. TRL uses a user `labels` column as
   is, so its normaliser `num_items_in_batch` (label tokens over all gradient-accumulation micro-batches and all
   ranks) counts exactly the selected tokens: the loss is the mean NLL over selected tokens across the optimizer
   step (the Token Cleaning objective, normalised the TRL way).
2. Training: the collator wrapper right-pads the per-token columns to the batch width; `compute_loss` pops them,
   builds a `TokenView`, calls the weighter, and runs TRL's `compute_loss` through a model-call proxy that
   multiplies the fused head's `log_probs` by the (shifted) weights. For a 0/1 mask the multiplier is exactly 1
   on every labelled token, so the loss is bit-identical to TRL on the folded labels; soft weights (compositions)
   give sum(w * nll) / #(w != 0). TRL's fused, vocabulary-chunked head is kept: no `[B, T, V]` logits.
With weights equal to the completion mask this is plain `SFTTrainer` (pinned by a test).

Online weighters (needs `logps`, `entropies`, `hidden_states`, filled from the same fused forward) cannot be folded
into labels: every completion token is labelled, and the proxy computes the weights from the forward's own outputs
before multiplying them in, so the loss is sum(w * nll) / #completion tokens. The weighter's view is in TRL's
log-prob layout, `[B, L-1]` (position t scores token t+1). Weight statistics, token dumps and TensorBoard
histograms are the GRPO trainers' (`WeightLogging`).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from trl import SFTTrainer

from tokrl.model_head import HiddenStateCapture, completion_hidden_states
from tokrl.trainers.token_cleaning_tokens import check_token_columns, tokenize_sft_row, truncation_slice
from tokrl.trainers.token_columns import pad_rows
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.weight_logging import WeightLogging
from tokrl.weighting import TokenView, TokenWeighter

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("token_scores",)  # carried for logging only when the dataset has them
SFT_NEEDS = frozenset({"logps", "entropies", "hidden_states"})  # from the fused forward the loss runs anyway


class TokenColumnCollator:
    """Wraps TRL's collator: right-pads the named per-token columns with 0 to the width of `input_ids`."""

    def __init__(self, inner, columns: tuple[str, ...]):
        self.inner = inner
        self.columns = tuple(columns)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.inner(examples)
        width = batch["input_ids"].shape[1]
        for column in self.columns:
            if column not in examples[0]:
                continue
            for i, example in enumerate(examples):
                if len(example[column]) != len(example["input_ids"]):
                    raise ValueError(
                        f"per-token column '{column}' of batch example {i} has {len(example[column])} values for "
                        f"{len(example['input_ids'])} tokens"
                    )
            batch[column] = pad_rows([example[column] for example in examples], width)
        return batch


class _WeightedCall:
    """Calls the model; on TRL's fused-head call, multiplies the per-token log-probs `[B, L-1]` by the weights
    (`weights`, or `weigh(output)` for an online weighter, computed from this very forward)."""

    def __init__(self, model, weights: torch.Tensor | None = None, weigh=None):
        self.model = model
        self.weights = weights
        self.weigh = weigh

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head"):
            if self.weigh is not None:
                self.weights = self.weigh(out)
            if out.log_probs.shape != self.weights.shape:
                raise RuntimeError(
                    f"fused log_probs {tuple(out.log_probs.shape)} do not match the shifted weights "
                    f"{tuple(self.weights.shape)}"
                )
            out.log_probs = out.log_probs * self.weights.to(out.log_probs.device, out.log_probs.dtype)
        return out

    def __getattr__(self, name):
        return getattr(self.model, name)


def row_weights(weighter: TokenWeighter, example: dict, columns: tuple[str, ...]) -> np.ndarray:
    """The weighter's weights for one pre-tokenised row, `[L]`, zero outside its completion mask."""
    ids = torch.as_tensor(example["input_ids"])[None]
    view = TokenView(
        completion_ids=ids,
        completion_mask=torch.as_tensor(example["completion_mask"], dtype=torch.float32)[None],
        columns={c: torch.as_tensor(example[c], dtype=torch.float32)[None] for c in columns},
    )
    return weighter(view)[0].numpy()


def prepare_weighted_dataset(
    dataset: Dataset,
    weighter: TokenWeighter,
    *,
    max_length: int | None,
    truncation_mode: str = "keep_start",
    tokenizer=None,
    name: str = "train",
    online: bool = False,
) -> tuple[Dataset, int]:
    """Tokenise (if needed), truncate all per-token columns together, fold the weights into `labels`.

    Returns the dataset (columns `input_ids`, `labels`, `completion_mask`, the weighter's columns and any
    `token_scores`) and the number of rows left with no selected token (TRL drops them). `online`: the weights need
    the forward, so every completion token is labelled and weighted at loss time.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} dataset: TokenCleaningSFTTrainer needs a datasets.Dataset, got {type(dataset).__name__}")
    columns = tuple(weighter.all_columns())
    names = dataset.column_names
    if "input_ids" not in names:
        if columns:
            raise ValueError(
                f"{name} dataset: the weighter reads per-token column(s) {list(columns)}, which need a pre-tokenised "
                "dataset (input_ids, completion_mask, ...) such as `tokrl clean` writes"
            )
        if tokenizer is None:
            raise ValueError(f"{name} dataset: pass processing_class to tokenise a prompt/completion dataset")
        dataset = dataset.map(
            lambda ex, idx: tokenize_sft_row(ex, tokenizer, row=idx),
            with_indices=True,
            remove_columns=names,
            desc=f"Tokenizing {name} dataset",
        )
        names = dataset.column_names
    if "completion_mask" not in names:
        raise ValueError(f"{name} dataset: a pre-tokenised dataset needs a 'completion_mask' column")
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{name} dataset: the weighter reads column(s) {missing}, which the dataset lacks ({names})")
    per_token = ("completion_mask", *columns, *[c for c in LOG_COLUMNS if c in names and c not in columns])
    sl = truncation_slice(max_length, truncation_mode)

    def fold(example, idx):
        check_token_columns(example, per_token, idx)
        cut = {c: example[c][sl] for c in ("input_ids", *per_token)}
        w = np.asarray(cut["completion_mask"]) if online else row_weights(weighter, cut, columns)
        cut["labels"] = [t if wt != 0 else -100 for t, wt in zip(cut["input_ids"], w.tolist())]
        return cut

    keep = ["input_ids", *per_token]
    dataset = dataset.map(
        fold,
        with_indices=True,
        remove_columns=[c for c in names if c not in keep],
        desc=f"Selecting tokens of {name} dataset",
    )
    empty = sum(1 for labels in dataset["labels"] if all(t == -100 for t in labels))
    if empty:
        logger.info("%s dataset: %d of %d rows have no selected token and are dropped by TRL", name, empty, len(dataset))
    return dataset, empty


class TokenCleaningSFTTrainer(WeightLogging, SFTTrainer):
    """SFT on the tokens selected by an offline weighter (Token Cleaning's `token_mask` by default).

    Args:
        weighter: a `TokenWeighter` or registry spec; defaults to `args.weighting`.
        Everything else is passed to `trl.SFTTrainer`. Datasets must be `datasets.Dataset`s: pre-tokenised with
        the weighter's columns (what `tokrl clean` writes), or prompt/completion rows when the weighter reads no
        column (e.g. `"uniform"`, for the reference model).
    """

    _tag_names = ["trl", "sft", "tokrl", "token-cleaning"]
    _name = "TokenCleaningSFT"
    config_class = TokenCleaningSFTConfig

    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None, *, weighter=None, **kwargs):
        if args is None:
            args = TokenCleaningSFTConfig("tmp_trainer")
        self.use_weighter(weighter, args, SFT_NEEDS)
        self.online = bool(self.weighter.all_needs())
        if getattr(args, "remove_unused_columns", False):
            raise ValueError("set remove_unused_columns=False: the per-token columns must reach the collator")
        tokenizer = kwargs.get("processing_class")
        self.empty_rows = {}
        prep = dict(max_length=args.max_length, truncation_mode=args.truncation_mode, tokenizer=tokenizer,
                    online=self.online)
        if train_dataset is not None:
            train_dataset, self.empty_rows["train"] = prepare_weighted_dataset(train_dataset, self.weighter, **prep)
        if isinstance(eval_dataset, (dict, DatasetDict)):
            eval_dataset = {k: prepare_weighted_dataset(v, self.weighter, name=f"eval {k}", **prep)[0]
                            for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset, self.empty_rows["eval"] = prepare_weighted_dataset(eval_dataset, self.weighter,
                                                                             name="eval", **prep)
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.token_columns = ("completion_mask", *self.weighter.all_columns(), *LOG_COLUMNS)
        self.data_collator = TokenColumnCollator(self.data_collator, self.token_columns)
        self.setup_weight_logging()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        columns = {c: inputs.pop(c) for c in self.token_columns if c in inputs}
        completion_mask = columns.pop("completion_mask", None)
        if completion_mask is None:  # a batch that did not come through our collator: plain TRL
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # the log-prob layout [B, L-1]: position t scores token t+1
        view = TokenView(completion_ids=inputs["input_ids"][:, 1:], completion_mask=completion_mask[:, 1:],
                         columns={name: column[:, 1:] for name, column in columns.items()}, gather=self.gather_flat)
        needs = self.weighter.all_needs()
        capture = HiddenStateCapture(model, only_grad=False) if "hidden_states" in needs else None

        def weigh(out):
            if "logps" in needs:
                view.logps = out.log_probs.detach()
            if "entropies" in needs:
                view.entropies = out.entropy.detach()
            if capture is not None:
                view.hidden_states = completion_hidden_states(capture.states[0], view.completion_ids.size(1)).detach()
            return self.weighter(view)

        call = _WeightedCall(model, weigh=weigh) if self.online else _WeightedCall(model, self.weighter(view))
        with capture if capture is not None else contextlib.nullcontext():
            loss = super().compute_loss(call, inputs, return_outputs, num_items_in_batch)
        self.record_weights(view, call.weights, view.completion_mask)
        attention = inputs.get("attention_mask", torch.ones_like(completion_mask))
        self.last_prompt = (inputs["input_ids"], attention * (1 - completion_mask))
        self._log_selection(call.weights, view.completion_mask, view.columns.get("token_scores"))
        return loss

    def _log_selection(self, weights, completion_mask, scores) -> None:
        kept = weights != 0
        gather = self.accelerator.gather_for_metrics
        n_kept = gather(kept.sum().reshape(1).float()).sum()
        n_resp = gather(completion_mask.sum().reshape(1).float()).sum()
        self.log_metric("token_cleaning/kept_frac", (n_kept / n_resp.clamp(min=1)).item())
        if scores is not None:
            s_kept = gather((scores * kept).sum().reshape(1).float()).sum()
            self.log_metric("token_cleaning/kept_score_mean", (s_kept / n_kept.clamp(min=1)).item())
